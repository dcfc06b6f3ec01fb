//! A JSON body's shape, measured before it is parsed into anything: how many values it holds
//! and its longest list. A parsed value costs several times its text (a `{}` of two bytes
//! becomes a map of dozens), so a body within the payload limit could otherwise cost hundreds
//! of megabytes; measuring streams over the text and keeps nothing.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Most values (each string, number, list, object…) one JSON body may hold: far above what
/// any route's largest legitimate request needs, far below what would cost real memory.
pub const MAX_JSON_VALUES: usize = 100_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub values: usize,
    pub longest_list: usize,
}

/// The shape of `body`, or the parser's error when it is not JSON (or nests deeper than the
/// parser allows).
pub fn measure(body: &[u8]) -> Result<Shape, serde_json::Error> {
    let mut shape = Shape::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    Counter(&mut shape).deserialize(&mut de)?;
    de.end()?;
    Ok(shape)
}

struct Counter<'a>(&'a mut Shape);

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! count_scalar {
    ($($name:ident: $t:ty),*) => {
        $(fn $name<E>(self, _: $t) -> Result<(), E> {
            self.0.values += 1;
            Ok(())
        })*
    };
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    count_scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.values += 1;
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.values += 1;
        let mut n = 0;
        while seq.next_element_seed(Counter(&mut *self.0))?.is_some() {
            n += 1;
        }
        self.0.longest_list = self.0.longest_list.max(n);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.values += 1;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Counter(&mut *self.0))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_values_and_the_longest_list() {
        let s = measure(br#"{"items": [{"a": 1}, {"b": [true, null, "x"]}], "n": 2}"#).unwrap();
        assert_eq!(s.longest_list, 3);
        assert_eq!(s.values, 10);
        let many = format!("[{}{{}}]", "{},".repeat(99_999));
        assert_eq!(measure(many.as_bytes()).unwrap().longest_list, 100_000);
        assert!(measure(b"[1, 2").is_err());
        assert!(measure(b"[1] x").is_err());
        assert!(measure(&[b'['; 200]).is_err(), "too deep");
    }
}
