//! BART/GPT-2 byte-level BPE as the slow `OFATokenizer` (HF `BartTokenizer`) runs it, with
//! OFA's 9,192 added tokens (`<code_0..8191>`, `<bin_0..999>`) and special-token splitting.

use std::collections::HashMap;
use std::path::Path;

/// The BART vocabulary and merges, as a ModelScope model directory names them.
pub const VOCAB_FILE: &str = "vocab.json";
pub const MERGES_FILE: &str = "merges.txt";

use fancy_regex::Regex;

use crate::error::{PreprocessError, Result};
use crate::text::py_isspace;
use ofa_api::BackendError;

pub const BOS_ID: u32 = 0;
pub const PAD_ID: u32 = 1;
pub const EOS_ID: u32 = 2;
pub const UNK_ID: u32 = 3;
pub const NUM_CODE_TOKENS: usize = 8192;
pub const NUM_BIN_TOKENS: usize = 1000;

const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Tokens never split by BPE. `lstrip` tokens swallow the whitespace before them (BART's `<mask>`).
#[derive(Debug, Clone, Copy)]
struct AddedToken {
    id: u32,
    lstrip: bool,
}

pub struct Tokenizer {
    vocab: HashMap<String, u32>,
    merges: HashMap<(String, String), usize>,
    added: HashMap<String, AddedToken>,
    byte_chars: [char; 256],
    pattern: Regex,
    len: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("len", &self.len).finish()
    }
}

/// GPT-2's reversible byte → printable-character table.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut n = 0;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).unwrap_or('\0')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    table
}

impl Tokenizer {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let vocab_path = dir.join(VOCAB_FILE);
        let merges_path = dir.join(MERGES_FILE);
        let vocab_bytes =
            std::fs::read(&vocab_path).map_err(|e| PreprocessError::io(&vocab_path, e))?;
        let vocab: HashMap<String, u32> =
            serde_json::from_slice(&vocab_bytes).map_err(|source| PreprocessError::Json {
                path: vocab_path.clone(),
                source,
            })?;
        let merges_text = std::fs::read_to_string(&merges_path)
            .map_err(|e| PreprocessError::io(&merges_path, e))?;
        Self::new(vocab, &merges_text, &vocab_path, &merges_path)
    }

    /// From the contents of `vocab.json` and `merges.txt`; `dir` names their origin for errors.
    pub fn from_bytes(vocab_json: &[u8], merges_txt: &str, dir: &Path) -> Result<Self> {
        let vocab_path = dir.join(VOCAB_FILE);
        let vocab: HashMap<String, u32> =
            serde_json::from_slice(vocab_json).map_err(|source| PreprocessError::Json {
                path: vocab_path.clone(),
                source,
            })?;
        Self::new(vocab, merges_txt, &vocab_path, &dir.join(MERGES_FILE))
    }

    fn new(
        vocab: HashMap<String, u32>,
        merges_text: &str,
        vocab_path: &Path,
        merges_path: &Path,
    ) -> Result<Self> {
        let tok_err = |file: &Path, message: String| PreprocessError::Tokenizer {
            file: file.to_path_buf(),
            message,
        };
        for special in ["<s>", "<pad>", "</s>", "<unk>"] {
            if !vocab.contains_key(special) {
                return Err(tok_err(
                    vocab_path,
                    format!("special token {special} is missing"),
                ));
            }
        }
        if vocab.get("<s>") != Some(&BOS_ID)
            || vocab.get("<pad>") != Some(&PAD_ID)
            || vocab.get("</s>") != Some(&EOS_ID)
        {
            return Err(tok_err(
                vocab_path,
                "expected <s>=0, <pad>=1, </s>=2".into(),
            ));
        }
        // Python: read().split("\n")[1:-1] — the first line is the "#version" header.
        let mut merges = HashMap::new();
        let lines: Vec<&str> = merges_text.split('\n').collect();
        let body = if lines.len() >= 2 {
            &lines[1..lines.len() - 1]
        } else {
            &[][..]
        };
        for (rank, line) in body.iter().enumerate() {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some(a), Some(b)) => {
                    merges.entry((a.to_owned(), b.to_owned())).or_insert(rank);
                }
                _ => {
                    return Err(tok_err(
                        merges_path,
                        format!("line {} is not a merge pair", rank + 2),
                    ))
                }
            }
        }
        if merges.is_empty() {
            return Err(tok_err(merges_path, "no merges".into()));
        }

        let mut added = HashMap::new();
        for special in ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] {
            if let Some(&id) = vocab.get(special) {
                added.insert(
                    special.to_owned(),
                    AddedToken {
                        id,
                        lstrip: special == "<mask>",
                    },
                );
            }
        }
        let mut next_id = vocab.values().copied().max().map_or(0, |m| m + 1);
        let names = (0..NUM_CODE_TOKENS)
            .map(|i| format!("<code_{i}>"))
            .chain((0..NUM_BIN_TOKENS).map(|i| format!("<bin_{i}>")));
        for name in names {
            let id = match vocab.get(&name) {
                Some(&id) => id,
                None => {
                    next_id += 1;
                    next_id - 1
                }
            };
            added.insert(name, AddedToken { id, lstrip: false });
        }
        let pattern = Regex::new(GPT2_PATTERN).map_err(|e| tok_err(vocab_path, e.to_string()))?;
        Ok(Tokenizer {
            vocab,
            merges,
            added,
            byte_chars: bytes_to_unicode(),
            pattern,
            len: next_id as usize,
        })
    }

    /// Vocabulary size including the added tokens (the logits width must equal it).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Token ids of `text` without BOS/EOS, as `tokenizer(text, add_special_tokens=False)`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for piece in self.split_added(text) {
            match piece {
                Piece::Added(id) => ids.push(id),
                Piece::Text(t) => self.encode_plain(t, &mut ids)?,
            }
        }
        Ok(ids)
    }

    /// Each answer's one token id, as the decoder scores it (`" answer"`); `file` names where
    /// the answers came from, for the error when one is several tokens.
    pub fn answer_ids(&self, answers: &[String], file: &Path) -> Result<Vec<u32>> {
        answers
            .iter()
            .map(
                |answer| match self.encode(&format!(" {answer}"))?.as_slice() {
                    &[id] => Ok(id),
                    ids => Err(PreprocessError::Unsupported {
                        file: file.to_path_buf(),
                        option: "answer".into(),
                        value: format!("{answer:?}"),
                        why: format!(
                            "it is {} BPE tokens; one-pass scoring needs single-token answers",
                            ids.len()
                        ),
                    }),
                },
            )
            .collect()
    }

    /// Splits out added/special tokens (all of the form `<...>`), applying `lstrip` to the text
    /// before a token that has it.
    fn split_added<'a>(&self, text: &'a str) -> Vec<Piece<'a>> {
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut search = 0;
        while let Some(rel) = text[search..].find('<') {
            let open = search + rel;
            let Some(close_rel) = text[open..].find('>') else {
                break;
            };
            let candidate = &text[open..open + close_rel + 1];
            if let Some(tok) = self.added.get(candidate) {
                let mut before = &text[start..open];
                if tok.lstrip {
                    before = before.trim_end_matches(py_isspace);
                }
                if !before.is_empty() {
                    pieces.push(Piece::Text(before));
                }
                pieces.push(Piece::Added(tok.id));
                start = open + candidate.len();
                search = start;
            } else {
                search = open + 1;
            }
        }
        if start < text.len() {
            pieces.push(Piece::Text(&text[start..]));
        }
        pieces
    }

    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>) -> Result<()> {
        for m in self.pattern.find_iter(text) {
            let m = m.map_err(|e| {
                PreprocessError::Input(BackendError::Text(format!("tokenizer regex failed: {e}")))
            })?;
            let word: Vec<String> = m
                .as_str()
                .bytes()
                .map(|b| self.byte_chars[b as usize].to_string())
                .collect();
            for token in self.bpe(word) {
                ids.push(self.vocab.get(&token).copied().unwrap_or(UNK_ID));
            }
        }
        Ok(())
    }

    /// Repeatedly merges the lowest-ranked adjacent pair, as GPT-2's `bpe()` does.
    fn bpe(&self, mut word: Vec<String>) -> Vec<String> {
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|w| {
                    self.merges
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|&r| (r, w[0].clone(), w[1].clone()))
                })
                .min_by_key(|(r, _, _)| *r);
            let Some((_, a, b)) = best else { break };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == a && word[i + 1] == b {
                    merged.push(format!("{a}{b}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut word[i]));
                    i += 1;
                }
            }
            word = merged;
        }
        word
    }
}

enum Piece<'a> {
    Text(&'a str),
    Added(u32),
}
