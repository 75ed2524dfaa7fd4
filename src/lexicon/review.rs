//! How a candidate symptom span is put to the entity review model (`entity_review`): the
//! span as the first text, and the sentence around it as the second, with the span between
//! 【 and 】 so the model knows which occurrence is meant. The trainer, the offline pipeline
//! and the doctor all build their inputs here, so the model sees at serving time exactly the
//! shape it was trained on.

/// The classes, in the order of the model's outputs.
pub const LABELS: [&str; 2] = ["not", "symptom"];

/// Characters of context kept on each side of the span: enough for a denial at the head of
/// a list (一般不伴有发热、咳嗽、腹泻), short enough for the model's 64 tokens.
pub const CONTEXT_CHARS: usize = 20;

/// `(span, context)` for the characters `start..end` of `sentence`.
pub fn review_input(sentence: &[char], start: usize, end: usize) -> (String, String) {
    let end = end.min(sentence.len());
    let start = start.min(end);
    let from = start.saturating_sub(CONTEXT_CHARS);
    let to = (end + CONTEXT_CHARS).min(sentence.len());
    let span: String = sentence[start..end].iter().collect();
    let mut context = String::with_capacity((to - from + 2) * 3);
    context.extend(&sentence[from..start]);
    context.push('【');
    context.push_str(&span);
    context.push('】');
    context.extend(&sentence[end..to]);
    (span, context)
}

/// The character range of the `occurrence`-th (from 0) appearance of `span` in `sentence`.
pub fn locate(sentence: &[char], span: &str, occurrence: usize) -> Option<(usize, usize)> {
    let needle: Vec<char> = span.chars().collect();
    if needle.is_empty() || needle.len() > sentence.len() {
        return None;
    }
    (0..=sentence.len() - needle.len())
        .filter(|&i| sentence[i..i + needle.len()] == needle[..])
        .nth(occurrence)
        .map(|i| (i, i + needle.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_span_is_marked_in_a_bounded_window() {
        let s: Vec<char> = "一般不伴有发热，也很少咳嗽".chars().collect();
        let (start, end) = locate(&s, "咳嗽", 0).unwrap();
        assert_eq!(
            review_input(&s, start, end),
            (
                "咳嗽".to_string(),
                "一般不伴有发热，也很少【咳嗽】".to_string()
            )
        );
        let long: Vec<char> = "甲".repeat(100).chars().chain("头痛".chars()).collect();
        let (_, context) = review_input(&long, 100, 102);
        assert_eq!(context.chars().count(), CONTEXT_CHARS + 4);
        assert_eq!(locate(&s, "咳嗽", 1), None);
        assert_eq!(
            locate(&"咳咳咳".chars().collect::<Vec<_>>(), "咳", 2),
            Some((2, 3))
        );
        assert_eq!(locate(&s, "", 0), None);
    }
}
