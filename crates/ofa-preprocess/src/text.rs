//! Sentence normalisation and prompt construction, as the ModelScope OFA preprocessor does them.

/// Template for a hypothesis alone.
pub const HYPOTHESIS_PROMPT: &str = " does the image describe \" {} \"?";
/// Template for premise + hypothesis (the premise fills the first slot).
pub const PREMISE_PROMPT: &str = " can image and text1 \" {} \" imply text2 \" {} \"?";

/// Python's `str.isspace`, which `re`'s `\s` follows for `str` patterns: Unicode White_Space
/// plus the ASCII information separators U+001C..U+001F.
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// OFA's `pre_caption(caption, max_words)`.
pub fn pre_caption(caption: &str, max_words: usize) -> String {
    let lowered = caption.to_lowercase();
    let stripped = lowered.trim_start_matches([',', '.', '!', '?', '*', '#', ':', ';', '~']);
    let replaced = stripped
        .replace(['-', '/'], " ")
        .replace("<person>", "person");
    // re.sub(r'\s{2,}', ' ', s): only runs of two or more collapse; a lone tab or newline stays.
    let mut collapsed = String::with_capacity(replaced.len());
    let chars: Vec<char> = replaced.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if py_isspace(chars[i]) {
            let mut j = i;
            while j < chars.len() && py_isspace(chars[j]) {
                j += 1;
            }
            if j - i >= 2 {
                collapsed.push(' ');
            } else {
                collapsed.push(chars[i]);
            }
            i = j;
        } else {
            collapsed.push(chars[i]);
            i += 1;
        }
    }
    let trimmed = collapsed.trim_end_matches('\n').trim_matches(' ');
    let words: Vec<&str> = trimmed.split(' ').collect();
    if words.len() > max_words {
        words[..max_words].join(" ")
    } else {
        trimmed.to_owned()
    }
}

/// Python's `template.format(*args)` for positional `{}` fields (and `{{`/`}}` escapes).
pub fn format_template(template: &str, args: &[&str]) -> String {
    let mut out =
        String::with_capacity(template.len() + args.iter().map(|a| a.len()).sum::<usize>());
    let mut rest = template;
    let mut next = 0;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(r) = tail.strip_prefix("{{") {
            out.push('{');
            rest = r;
        } else if let Some(r) = tail.strip_prefix("}}") {
            out.push('}');
            rest = r;
        } else if let Some(r) = tail.strip_prefix("{}") {
            out.push_str(args.get(next).copied().unwrap_or(""));
            next += 1;
            rest = r;
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The source prompt for a hypothesis and an optional premise.
pub fn build_prompt(
    hypothesis: &str,
    premise: Option<&str>,
    max_words: usize,
    custom_prompt: Option<&str>,
) -> String {
    let hypothesis = pre_caption(hypothesis, max_words);
    match premise {
        None => format_template(custom_prompt.unwrap_or(HYPOTHESIS_PROMPT), &[&hypothesis]),
        Some(p) => {
            let premise = pre_caption(p, max_words);
            format_template(
                custom_prompt.unwrap_or(PREMISE_PROMPT),
                &[&premise, &hypothesis],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_punctuation_only_before_any_space() {
        assert_eq!(pre_caption(",.!? The cat", 10), "the cat");
        assert_eq!(pre_caption(" ,cat", 10), ",cat");
    }

    #[test]
    fn single_whitespace_survives_runs_collapse() {
        assert_eq!(pre_caption("a\tb  c\n\nd\n", 10), "a\tb c d");
        assert_eq!(pre_caption("x-y/z <person>", 10), "x y z person");
    }

    #[test]
    fn word_truncation() {
        assert_eq!(pre_caption("a b c d", 2), "a b");
    }

    #[test]
    fn templates() {
        assert_eq!(
            build_prompt("Two birds.", None, 256, None),
            " does the image describe \" two birds. \"?"
        );
        assert_eq!(
            build_prompt("B", Some("A"), 256, None),
            " can image and text1 \" a \" imply text2 \" b \"?"
        );
        assert_eq!(format_template("{{x}} {}", &["y"]), "{x} y");
    }
}
