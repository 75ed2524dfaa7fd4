#!/usr/bin/env python3
"""Validate the Chinese medical lexicon in this directory.

Usage: python3 data/check_lexicon.py [DATA_DIR]

Also validates DATA_DIR/language/*.csv (decomposition tables) when that folder exists.

Standard library only. Exits 0 when every check passes, 1 otherwise.
"""
import os
import re
import sys
from collections import Counter, defaultdict

MIN_SYMPTOMS = 170
MIN_DISEASES = 110
MIN_LINKS = 800
MIN_LINKS_PER_DISEASE = 3
MAX_LINKS_PER_DISEASE = 12
MAX_ALIASES = 24
DESC_MIN, DESC_MAX = 10, 40

# Symptom names and aliases: 2-8 CJK unified ideographs, nothing else.
TERM_RE = re.compile(r"^[\u4e00-\u9fff]{2,8}$")
FORBIDDEN_IN_FIELD = set(',"\'|')  # '|' only allowed as the aliases separator
WHITESPACE = re.compile(r"\s|\u3000")

errors = []
warnings = []


def err(msg):
    errors.append(msg)


def load(path, header, ncols):
    rows = []
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(b"\xef\xbb\xbf"):
        err(f"{os.path.basename(path)}: has a UTF-8 BOM")
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        err(f"{os.path.basename(path)}: not valid UTF-8 ({e})")
        return rows
    if "\r" in text:
        err(f"{os.path.basename(path)}: contains CR characters (use LF line endings)")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    name = os.path.basename(path)
    if not lines:
        err(f"{name}: empty file")
        return rows
    if lines[0] != header:
        err(f"{name}: header is {lines[0]!r}, expected {header!r}")
    for i, line in enumerate(lines[1:], start=2):
        if line == "":
            err(f"{name}:{i}: empty line")
            continue
        if '"' in line or "'" in line:
            err(f"{name}:{i}: contains a quote character")
        cols = line.split(",")
        if len(cols) != ncols:
            err(f"{name}:{i}: expected {ncols} columns, got {len(cols)}: {line!r}")
            continue
        for c in cols:
            if WHITESPACE.search(c):
                err(f"{name}:{i}: field {c!r} contains whitespace")
        rows.append((i, cols))
    return rows


# ---- data/language/: decomposition tables (part word + filler + sensation word) ----
SYSTEMS = {"全身", "头部", "神经", "眼", "耳鼻喉", "口腔", "呼吸", "心血管", "消化", "泌尿",
           "生殖", "皮肤", "骨骼肌肉", "精神", "内分泌"}
WORD_RE = re.compile(r"^[\u4e00-\u9fff]{1,8}$")
WORD_KINDS = ["degree", "frequency", "particle", "aspect", "negation", "negation_end", "topic_shift",
              "closing", "greeting", "logistics", "complaint_question", "duration_severity", "person",
              "plain"]
# Kinds whose rows are groups: each `person` row is the words for one person (孩子|宝宝|娃).
REPEATABLE_KINDS = {"person"}
# 头发 (hair) is no body part of a complaint; 胃口 (appetite) is, with 没有/不好 (食欲).
FORBIDDEN_PART_WORDS = {"头发"}


def split_words(fname, i, field):
    ws = field.split("|") if field else []
    if not ws:
        err(f"{fname}:{i}: empty word list")
    seen = set()
    for w in ws:
        if not WORD_RE.match(w):
            err(f"{fname}:{i}: word {w!r} is not 1-8 Chinese characters")
        if w in seen:
            err(f"{fname}:{i}: word {w!r} listed twice in the same row")
        seen.add(w)
    return ws


def check_disease_texts(data_dir, diseases):
    td = os.path.join(data_dir, "disease_texts")
    if not os.path.isdir(td):
        return
    n = 0
    for f in sorted(os.listdir(td)):
        if not f.endswith(".txt"):
            continue
        n += 1
        name = f[:-4]
        if name not in diseases:
            err(f"disease_texts/{f}: {name!r} is not a disease of diseases.csv")
        with open(os.path.join(td, f), encoding="utf-8") as fh:
            text = fh.read()
        if not text.startswith(f"# {name}\n"):
            err(f"disease_texts/{f}: the first line must be '# {name}'")
        if "\r" in text:
            err(f"disease_texts/{f}: contains CR characters")
        if len([p for p in text.split("\n\n")[1:] if p.strip()]) < 2:
            err(f"disease_texts/{f}: fewer than two paragraphs")
    print(f"disease texts: {n} files")


def check_language(data_dir, symptoms):
    ld = os.path.join(data_dir, "language")
    if not os.path.isdir(ld):
        return
    bp_rows = load(os.path.join(ld, "body_parts.csv"), "part,words,system", 3)
    se_rows = load(os.path.join(ld, "sensations.csv"), "sensation,words", 2)
    co_rows = load(os.path.join(ld, "compositions.csv"), "part,sensation,symptom", 3)
    wo_rows = load(os.path.join(ld, "words.csv"), "kind,words", 2)

    parts, part_word = {}, {}
    n_part_words = 0
    for i, (part, words, system) in bp_rows:
        if not WORD_RE.match(part):
            err(f"body_parts.csv:{i}: part key {part!r} is not 1-8 Chinese characters")
        if part in parts:
            err(f"body_parts.csv:{i}: duplicate part {part!r}")
        parts[part] = system
        if system not in SYSTEMS:
            err(f"body_parts.csv:{i}: system {system!r} is not a valid body_part value")
        for w in split_words("body_parts.csv", i, words):
            n_part_words += 1
            if w in FORBIDDEN_PART_WORDS:
                err(f"body_parts.csv:{i}: {w!r} must not be a part word")
            if w in part_word and part_word[w] != part:
                err(f"body_parts.csv:{i}: word {w!r} in both {part_word[w]!r} and {part!r}")
            part_word.setdefault(w, part)

    sensations, sens_word = set(), {}
    n_sens_words = 0
    for i, (sens, words) in se_rows:
        if not WORD_RE.match(sens):
            err(f"sensations.csv:{i}: sensation key {sens!r} is not 1-8 Chinese characters")
        if sens in sensations:
            err(f"sensations.csv:{i}: duplicate sensation {sens!r}")
        sensations.add(sens)
        for w in split_words("sensations.csv", i, words):
            n_sens_words += 1
            if w in sens_word and sens_word[w] != sens:
                err(f"sensations.csv:{i}: word {w!r} in both {sens_word[w]!r} and {sens!r}")
            sens_word.setdefault(w, sens)
    for w in sorted(set(part_word) & set(sens_word)):
        err(f"language: {w!r} is both a part word ({part_word[w]}) and a sensation word ({sens_word[w]})")

    pairs = set()
    used_parts, used_sens = set(), set()
    for i, (part, sens, sym) in co_rows:
        if (part, sens) in pairs:
            err(f"compositions.csv:{i}: duplicate pair {part},{sens}")
        pairs.add((part, sens))
        if part not in parts:
            err(f"compositions.csv:{i}: unknown part {part!r}")
        if sens not in sensations:
            err(f"compositions.csv:{i}: unknown sensation {sens!r}")
        if sym not in symptoms:
            err(f"compositions.csv:{i}: unknown symptom {sym!r}")
        used_parts.add(part)
        used_sens.add(sens)
    for p in parts:
        if p not in used_parts:
            warnings.append(f"language: part {p!r} is used by no composition")
    for s_ in sensations:
        if s_ not in used_sens:
            warnings.append(f"language: sensation {s_!r} is used by no composition")

    kinds = {}
    for i, (kind, words) in wo_rows:
        if kind not in WORD_KINDS:
            err(f"words.csv:{i}: unknown kind {kind!r}")
        if kind in kinds and kind not in REPEATABLE_KINDS:
            err(f"words.csv:{i}: duplicate kind {kind!r}")
        kinds.setdefault(kind, []).extend(split_words("words.csv", i, words))
    for k in WORD_KINDS:
        if k not in kinds:
            err(f"words.csv: missing kind {k!r}")

    verbs = {}
    for i, (verb, symptom) in load(os.path.join(ld, "verbs.csv"), "verb,symptom", 2):
        if not WORD_RE.match(verb):
            err(f"verbs.csv:{i}: verb {verb!r} is not 1-8 Chinese characters")
        if verb in verbs:
            err(f"verbs.csv:{i}: verb {verb!r} listed twice")
        if symptom not in symptoms:
            err(f"verbs.csv:{i}: unknown symptom {symptom!r}")
        verbs[verb] = symptom

    print(f"language: {len(parts)} parts ({n_part_words} words), {len(sensations)} sensations "
          f"({n_sens_words} words), {len(pairs)} compositions -> "
          f"{len({s for _, (_, _, s) in co_rows})} symptoms, {len(kinds)} word kinds "
          f"({sum(len(v) for v in kinds.values())} words)")


def main():
    data_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    sp = os.path.join(data_dir, "symptoms.csv")
    dp = os.path.join(data_dir, "diseases.csv")
    lp = os.path.join(data_dir, "disease_symptoms.csv")

    sym_rows = load(sp, "name,aliases,body_part", 3)
    dis_rows = load(dp, "name,department,body_system,description", 4)
    link_rows = load(lp, "disease,symptom", 2)

    # ---- symptoms ----
    symptoms = {}
    term_owner = {}
    body_parts = Counter()
    alias_total = 0
    no_alias = 0
    for i, (name, aliases, part) in sym_rows:
        if not TERM_RE.match(name):
            err(f"symptoms.csv:{i}: name {name!r} is not 2-8 Chinese characters")
        if name in symptoms:
            err(f"symptoms.csv:{i}: duplicate symptom name {name!r}")
        symptoms[name] = i
        if not part or any(ch in FORBIDDEN_IN_FIELD for ch in part) or len(part) > 6:
            err(f"symptoms.csv:{i}: bad body_part {part!r}")
        body_parts[part] += 1
        als = [a for a in aliases.split("|")] if aliases else []
        if aliases and any(a == "" for a in als):
            err(f"symptoms.csv:{i}: empty alias in {aliases!r}")
            als = [a for a in als if a]
        if len(als) > MAX_ALIASES:
            err(f"symptoms.csv:{i}: {name} has {len(als)} aliases (max {MAX_ALIASES})")
        if not als:
            no_alias += 1
        alias_total += len(als)
        for a in als:
            if len(a) < 2:
                err(f"symptoms.csv:{i}: alias {a!r} shorter than 2 characters")
            if not TERM_RE.match(a):
                err(f"symptoms.csv:{i}: alias {a!r} is not 2-8 Chinese characters")
        for t in [name] + als:
            if t in term_owner:
                err(f"symptoms.csv:{i}: term {t!r} already used by {term_owner[t]!r}")
            else:
                term_owner[t] = name

    # ---- diseases ----
    diseases = {}
    departments = Counter()
    for i, (name, dept, system, desc) in dis_rows:
        if not re.match(r"^[\u4e00-\u9fff]{2,12}$", name):
            err(f"diseases.csv:{i}: disease name {name!r} is not 2-12 Chinese characters")
        if name in diseases:
            err(f"diseases.csv:{i}: duplicate disease {name!r}")
        diseases[name] = i
        if not re.match(r"^[\u4e00-\u9fff]{2,8}$", dept):
            err(f"diseases.csv:{i}: bad department {dept!r}")
        departments[dept] += 1
        if system not in body_parts:
            err(f"diseases.csv:{i}: body_system {system!r} not in symptoms body_part vocabulary")
        if not (DESC_MIN <= len(desc) <= DESC_MAX):
            err(f"diseases.csv:{i}: description length {len(desc)} outside {DESC_MIN}-{DESC_MAX}")
        if any(ch in FORBIDDEN_IN_FIELD for ch in desc):
            err(f"diseases.csv:{i}: description contains a forbidden character")
        if name in term_owner:
            err(f"diseases.csv:{i}: disease name {name!r} collides with symptom term of {term_owner[name]!r}")

    # ---- links ----
    seen = set()
    per_disease = defaultdict(int)
    per_symptom = defaultdict(int)
    for i, (d, s) in link_rows:
        if (d, s) in seen:
            err(f"disease_symptoms.csv:{i}: duplicate link {d},{s}")
            continue
        seen.add((d, s))
        if d not in diseases:
            err(f"disease_symptoms.csv:{i}: unknown disease {d!r}")
        if s not in symptoms:
            hint = f" (alias of {term_owner[s]!r})" if s in term_owner else ""
            err(f"disease_symptoms.csv:{i}: unknown symptom {s!r}{hint}")
        per_disease[d] += 1
        per_symptom[s] += 1

    for d in diseases:
        n = per_disease.get(d, 0)
        if n == 0:
            err(f"disease {d!r} has no links")
        elif not (MIN_LINKS_PER_DISEASE <= n <= MAX_LINKS_PER_DISEASE):
            err(f"disease {d!r} has {n} links (allowed {MIN_LINKS_PER_DISEASE}-{MAX_LINKS_PER_DISEASE})")
    for s in symptoms:
        if per_symptom.get(s, 0) == 0:
            err(f"symptom {s!r} is not linked to any disease")

    check_language(data_dir, symptoms)
    check_disease_texts(data_dir, diseases)

    # ---- counts ----
    if len(sym_rows) < MIN_SYMPTOMS:
        err(f"only {len(sym_rows)} symptoms (need >= {MIN_SYMPTOMS})")
    if len(dis_rows) < MIN_DISEASES:
        err(f"only {len(dis_rows)} diseases (need >= {MIN_DISEASES})")
    if len(seen) < MIN_LINKS:
        err(f"only {len(seen)} links (need >= {MIN_LINKS})")

    # ---- informational ----
    if no_alias > len(sym_rows) // 2:
        warnings.append(f"{no_alias} of {len(sym_rows)} symptoms have no alias")
    shared = sum(1 for s in symptoms if per_symptom.get(s, 0) >= 2)

    print(f"symptoms: {len(sym_rows)} (aliases: {alias_total}, without alias: {no_alias}, "
          f"distinct terms: {len(term_owner)})")
    print(f"body parts: {len(body_parts)} -> " + " ".join(f"{k}:{v}" for k, v in body_parts.most_common()))
    print(f"diseases: {len(dis_rows)} in {len(departments)} departments -> "
          + " ".join(f"{k}:{v}" for k, v in departments.most_common()))
    print(f"links: {len(seen)} (per disease min {min(per_disease.values(), default=0)} "
          f"max {max(per_disease.values(), default=0)} "
          f"avg {len(seen) / max(1, len(diseases)):.2f})")
    print(f"symptoms shared by >= 2 diseases: {shared} of {len(symptoms)}; "
          f"most shared: " + " ".join(f"{s}:{n}" for s, n in
                                      sorted(per_symptom.items(), key=lambda x: -x[1])[:8]))
    for w in warnings:
        print("WARNING:", w)
    if errors:
        for e in errors:
            print("ERROR:", e)
        print(f"FAILED: {len(errors)} error(s)")
        return 1
    print("OK: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
