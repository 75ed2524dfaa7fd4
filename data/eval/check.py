#!/usr/bin/env python3
"""Validate the hand-written evaluation set in data/eval/.

Usage: python3 data/eval/check.py [-v]

Standard library only. Checks that every symptom / optional name is a `name`
in data/symptoms.csv, that every top3 disease is a `name` in data/diseases.csv,
that ids are unique, that no message text (and no pair) appears twice, and that
the counts meet the minimums. Prints counts by category.

Errors make the script exit 1. "review" lines are heuristics (a lexicon term
written literally in a text but not labelled, a labelled symptom that also
appears negated, a conversation whose literal symptom words do not point at
its top3 diseases in the graph); they do not fail the check. Use -v to print
every review line instead of the first few.
"""
import json
import os
import re
import sys
from collections import Counter, defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.dirname(HERE)

MIN_MESSAGES = 280
MIN_PAIRS = 170
MIN_CONVERSATIONS = 70
MIN_CONV_DISEASES = 40
MIN_TURNS, MAX_TURNS = 2, 5
MIN_TOP3, MAX_TOP3 = 1, 3

errors = []
reviews = []


def err(msg):
    errors.append(msg)


def review(msg):
    reviews.append(msg)


def read_csv(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    header = lines[0].split(",")
    return [dict(zip(header, l.split(","))) for l in lines[1:]]


symptom_rows = read_csv("symptoms.csv")
SYMPTOMS = {r["name"] for r in symptom_rows}
BODY_PART = {r["name"]: r["body_part"] for r in symptom_rows}
TERM_TO_NAME = {}
for r in symptom_rows:
    TERM_TO_NAME[r["name"]] = r["name"]
    for a in filter(None, r["aliases"].split("|")):
        TERM_TO_NAME[a] = r["name"]
DISEASES = {r["name"] for r in read_csv("diseases.csv")}
DISEASE_SYMPTOMS = defaultdict(set)
for r in read_csv("disease_symptoms.csv"):
    DISEASE_SYMPTOMS[r["disease"]].add(r["symptom"])

# Longest terms first so that 干咳嗽 wins over 咳嗽 when scanning a text.
TERMS = sorted(TERM_TO_NAME, key=len, reverse=True)
TERM_RE = re.compile("|".join(map(re.escape, TERMS)))

# Negation heuristic: a negation word, an optional filler, then a lexicon term
# or a short colloquial symptom stem (不咳嗽, 没发烧, 没有拉肚子, 不吐不拉, 不痒不疼).
NEG_STEMS = ["烧", "咳", "吐", "疼", "痛", "痒", "晕", "歪", "喘", "肿", "痰", "麻"]
NEG_RE = re.compile(
    "(?:没有|没|不|无|未)(?:也|再|太|怎么)?("
    + "|".join(map(re.escape, TERMS + NEG_STEMS))
    + ")"
    # ... or a lexicon term followed by a negation (拉肚子倒是没有, 咳嗽没有了).
    + "|(?:" + "|".join(map(re.escape, TERMS)) + ")(?:倒是|倒|也|都|就)?(?:没有|没)了?(?=[，。,.！!？?～~ ]|$)"
)


def load_jsonl(name):
    path = os.path.join(HERE, name)
    rows = []
    if not os.path.exists(path):
        err(f"{name}: missing")
        return rows
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(b"\xef\xbb\xbf"):
        err(f"{name}: has a UTF-8 BOM")
    if b"\r" in raw:
        err(f"{name}: has CR line endings")
    for n, line in enumerate(raw.decode("utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            err(f"{name}:{n}: invalid JSON ({e})")
            continue
        if not isinstance(obj, dict):
            err(f"{name}:{n}: not a JSON object")
            continue
        obj["_line"] = n
        rows.append(obj)
    return rows


def check_ids(name, rows, prefix):
    c = Counter(r.get("id") for r in rows)
    for i, k in c.items():
        if k > 1:
            err(f"{name}: id {i!r} used {k} times")
    pat = re.compile(rf"^{prefix}\d{{3,}}$")
    for r in rows:
        if not isinstance(r.get("id"), str) or not pat.match(r["id"]):
            err(f"{name}:{r['_line']}: bad id {r.get('id')!r} (want {prefix}NNN)")


def check_keys(name, r, allowed, required):
    for k in required:
        if k not in r:
            err(f"{name}:{r['_line']}: missing key {k!r}")
    for k in r:
        if k != "_line" and k not in allowed:
            err(f"{name}:{r['_line']}: unexpected key {k!r}")


def nonempty_str(x):
    return isinstance(x, str) and x.strip() != ""


def norm(text):
    return re.sub(r"\s+", "", text)


def negated_names(text):
    out = set()
    for m in NEG_RE.finditer(text):
        if m.group(1) in TERM_TO_NAME:
            out.add(TERM_TO_NAME[m.group(1)])
        elif m.group(1) is None:
            head = TERM_RE.match(m.group(0))
            if head:
                out.add(TERM_TO_NAME[head.group(0)])
    return out


def literal_names(text):
    """Canonical names of lexicon terms written literally (and not negated)."""
    out = set()
    for m in TERM_RE.finditer(text):
        before = text[max(0, m.start() - 3):m.start()]
        after = text[m.end():m.end() + 5]
        if re.search("(没有|没|不|无|未)(也|再|太|怎么)?$", before):
            continue
        if re.match("(倒是|倒|也|都|就)?(没有|没)了?([，。,.！!？?～~ ]|$)", after):
            continue
        out.add(TERM_TO_NAME[m.group(0)])
    return out


# ---------------------------------------------------------------- messages
messages = load_jsonl("messages.jsonl")
check_ids("messages.jsonl", messages, "m")
texts = Counter()
n_empty = n_neg = n_optional = n_multi = 0
covered = Counter()
for r in messages:
    where = f"messages.jsonl:{r['_line']} ({r.get('id')})"
    check_keys("messages.jsonl", r, {"id", "text", "symptoms", "optional"}, ["id", "text", "symptoms"])
    text = r.get("text")
    if not nonempty_str(text):
        err(f"{where}: text must be a non-empty string")
        continue
    texts[norm(text)] += 1
    lists = {}
    for key in ("symptoms", "optional"):
        v = r.get(key, [])
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            err(f"{where}: {key} must be a list of strings")
            v = []
        for s in v:
            if s not in SYMPTOMS:
                err(f"{where}: {key} name {s!r} is not a name in symptoms.csv")
        for s, k in Counter(v).items():
            if k > 1:
                err(f"{where}: {key} lists {s!r} twice")
        lists[key] = v
    both = set(lists["symptoms"]) & set(lists["optional"])
    if both:
        err(f"{where}: {sorted(both)} in both symptoms and optional")
    if not lists["symptoms"]:
        n_empty += 1
    if len(lists["symptoms"]) >= 2:
        n_multi += 1
    if lists["optional"]:
        n_optional += 1
    covered.update(s for s in lists["symptoms"] if s in SYMPTOMS)
    neg = negated_names(text)
    if NEG_RE.search(text):
        n_neg += 1
    labelled = set(lists["symptoms"]) | set(lists["optional"])
    for s in sorted(neg & set(lists["symptoms"])):
        if s not in literal_names(text):
            review(f"{where}: {s} is labelled but only appears negated: {text}")
    for s in sorted(literal_names(text) - labelled):
        review(f"{where}: lexicon term for {s} written but not labelled: {text}")
for t, k in texts.items():
    if k > 1:
        err(f"messages.jsonl: text appears {k} times: {t}")

# ---------------------------------------------------------------- pairs
pairs = load_jsonl("pairs.jsonl")
check_ids("pairs.jsonl", pairs, "p")
pair_keys = Counter()
n_rel = n_unrel = 0
for r in pairs:
    where = f"pairs.jsonl:{r['_line']} ({r.get('id')})"
    check_keys("pairs.jsonl", r, {"id", "first", "second", "related"}, ["id", "first", "second", "related"])
    if not nonempty_str(r.get("first")) or not nonempty_str(r.get("second")):
        err(f"{where}: first and second must be non-empty strings")
        continue
    if norm(r["first"]) == norm(r["second"]):
        err(f"{where}: first and second are the same text")
    pair_keys[(norm(r["first"]), norm(r["second"]))] += 1
    if r.get("related") is True:
        n_rel += 1
    elif r.get("related") is False:
        n_unrel += 1
    else:
        err(f"{where}: related must be true or false")
for (a, b), k in pair_keys.items():
    if k > 1:
        err(f"pairs.jsonl: pair appears {k} times: {a} / {b}")
if pairs and not (0.4 <= n_rel / max(1, len(pairs)) <= 0.6):
    err(f"pairs.jsonl: not balanced ({n_rel} related, {n_unrel} unrelated)")

# ---------------------------------------------------------------- conversations
convs = load_jsonl("conversations.jsonl")
check_ids("conversations.jsonl", convs, "c")
conv_diseases = Counter()
turn_counts = Counter()
conv_keys = Counter()
for r in convs:
    where = f"conversations.jsonl:{r['_line']} ({r.get('id')})"
    check_keys("conversations.jsonl", r, {"id", "turns", "top3"}, ["id", "turns", "top3"])
    turns, top3 = r.get("turns"), r.get("top3")
    if not isinstance(turns, list) or not all(nonempty_str(t) for t in turns):
        err(f"{where}: turns must be a list of non-empty strings")
        continue
    if not MIN_TURNS <= len(turns) <= MAX_TURNS:
        err(f"{where}: {len(turns)} turns (want {MIN_TURNS}-{MAX_TURNS})")
    for t, k in Counter(norm(t) for t in turns).items():
        if k > 1:
            err(f"{where}: turn repeated: {t}")
    turn_counts[len(turns)] += 1
    conv_keys[tuple(norm(t) for t in turns)] += 1
    if not isinstance(top3, list) or not all(isinstance(d, str) for d in top3):
        err(f"{where}: top3 must be a list of strings")
        continue
    if not MIN_TOP3 <= len(top3) <= MAX_TOP3:
        err(f"{where}: top3 has {len(top3)} names (want {MIN_TOP3}-{MAX_TOP3})")
    for d, k in Counter(top3).items():
        if k > 1:
            err(f"{where}: top3 lists {d!r} twice")
    for d in top3:
        if d not in DISEASES:
            err(f"{where}: top3 disease {d!r} is not a name in diseases.csv")
    conv_diseases.update(d for d in top3 if d in DISEASES)
    # Heuristic: symptom words written literally should point at the target.
    found = set()
    for t in turns:
        found |= literal_names(t)
    hits = {d: len(found & DISEASE_SYMPTOMS[d]) for d in top3 if d in DISEASES}
    if found and hits and max(hits.values()) == 0:
        review(f"{where}: literal symptoms {sorted(found)} link to none of {top3}")
for k, n in conv_keys.items():
    if n > 1:
        err(f"conversations.jsonl: conversation appears {n} times")

# ---------------------------------------------------------------- minimums
if len(messages) < MIN_MESSAGES:
    err(f"messages.jsonl: {len(messages)} messages (want >= {MIN_MESSAGES})")
if len(pairs) < MIN_PAIRS:
    err(f"pairs.jsonl: {len(pairs)} pairs (want >= {MIN_PAIRS})")
if len(convs) < MIN_CONVERSATIONS:
    err(f"conversations.jsonl: {len(convs)} conversations (want >= {MIN_CONVERSATIONS})")
if len(conv_diseases) < MIN_CONV_DISEASES:
    err(f"conversations.jsonl: {len(conv_diseases)} distinct top3 diseases (want >= {MIN_CONV_DISEASES})")

# ---------------------------------------------------------------- report
body = Counter(BODY_PART[s] for s in covered)
all_body = Counter(BODY_PART.values())
spans = load_jsonl("review_spans.jsonl")
for r in spans:
    where = f"review_spans.jsonl:{r['_line']}"
    check_keys("review_spans.jsonl", r, {"sentence", "span", "label", "note", "occurrence"}, ["sentence", "span", "label"])
    sentence, span = r.get("sentence"), r.get("span")
    if not nonempty_str(sentence) or not nonempty_str(span):
        err(f"{where}: sentence and span must be non-empty strings")
        continue
    if r.get("label") not in ("symptom", "not"):
        err(f"{where}: label must be `symptom` or `not`")
    times = sum(1 for i in range(len(sentence)) if sentence.startswith(span, i))
    occurrence = r.get("occurrence")
    if times == 0:
        err(f"{where}: `{span}` is not in the sentence")
    elif times > 1 and not (isinstance(occurrence, int) and 0 <= occurrence < times):
        err(f"{where}: `{span}` occurs {times} times; say which with \"occurrence\" (0-based)")
    elif times == 1 and occurrence not in (None, 0):
        err(f"{where}: `{span}` occurs once; occurrence {occurrence!r} is out of range")

print("messages.jsonl")
print(f"  messages:                  {len(messages)}")
print(f"  empty-symptom messages:    {n_empty} ({100 * n_empty / max(1, len(messages)):.1f}%)")
print(f"  negation-containing:       {n_neg}")
print(f"  with >= 2 symptoms:        {n_multi}")
print(f"  with optional labels:      {n_optional}")
print(f"  distinct symptoms labelled: {len(covered)} of {len(SYMPTOMS)}")
print("  body parts covered:        " + ", ".join(f"{b} {len({s for s in covered if BODY_PART[s] == b})}/{all_body[b]}" for b in sorted(all_body, key=lambda b: -all_body[b])))
missing = sorted(SYMPTOMS - set(covered))
if missing:
    print(f"  symptoms never required:   {' '.join(missing)}")
print("pairs.jsonl")
print(f"  pairs:                     {len(pairs)}")
print(f"  related / unrelated:       {n_rel} / {n_unrel}")
print("conversations.jsonl")
print(f"  conversations:             {len(convs)}")
print(f"  distinct top3 diseases:    {len(conv_diseases)} of {len(DISEASES)}")
print("  turns per conversation:    " + ", ".join(f"{k}: {turn_counts[k]}" for k in sorted(turn_counts)))
print(f"  top3 sizes:                " + ", ".join(f"{k}: {v}" for k, v in sorted(Counter(len(r.get('top3') or []) for r in convs).items())))
overlap = {norm(r["text"]) for r in messages if nonempty_str(r.get("text"))} & (
    {norm(p["first"]) for p in pairs if nonempty_str(p.get("first"))}
    | {norm(p["second"]) for p in pairs if nonempty_str(p.get("second"))}
)
print("review_spans.jsonl")
print(f"  spans:                     {len(spans)}")
print(f"  symptom / not:             {sum(r.get('label') == 'symptom' for r in spans)} / {sum(r.get('label') == 'not' for r in spans)}")
print(f"cross-file: {len(overlap)} message texts also used in pairs")

verbose = "-v" in sys.argv[1:]
if reviews:
    print(f"review ({len(reviews)} heuristic notes, not errors):")
    for line in reviews if verbose else reviews[:15]:
        print("  " + line)
    if not verbose and len(reviews) > 15:
        print(f"  ... {len(reviews) - 15} more (use -v)")
if errors:
    print(f"FAILED: {len(errors)} error(s)")
    for e in errors:
        print("  " + e)
    sys.exit(1)
print("OK")
