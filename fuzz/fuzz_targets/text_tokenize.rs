//! Text normalisation and tokenising with the real BART vocabulary: any text (as the service
//! receives it, valid UTF-8) gives token ids inside the vocabulary, or an error.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ofa_preprocess::text::build_prompt;
use ofa_preprocess::tokenizer::Tokenizer;

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/ofa-model/assets/bart");
        Tokenizer::from_dir(&dir).expect("the BART vocabulary")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (hypothesis, premise) = match text.split_once('\u{1}') {
        Some((h, p)) => (h, Some(p)),
        None => (&*text, None),
    };
    let prompt = build_prompt(hypothesis, premise, 256, None);
    if let Ok(ids) = tokenizer().encode(&prompt) {
        assert!(ids.iter().all(|&id| (id as usize) < tokenizer().len()));
    }
});
