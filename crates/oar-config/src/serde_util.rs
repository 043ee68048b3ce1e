//! Wire-level helper types: the permissive shapes GitLab Runner's Go decoder accepts.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::locate::fold_key;

/// A struct whose keys match case-insensitively (and ignoring `_`/`-`), like the Go decoder
/// does for the `[runners.cache]` tables: `ServerAddress`, `serveraddress` and
/// `server_address` all reach the `ServerAddress` field.
#[derive(Debug, Default)]
pub(crate) struct Caseless<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Caseless<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(CaselessDeserializer(deserializer)).map(Caseless)
    }
}

struct CaselessDeserializer<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for CaselessDeserializer<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_struct(
            name,
            fields,
            CaselessVisitor {
                inner: visitor,
                fields,
            },
        )
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

struct CaselessVisitor<V> {
    inner: V,
    fields: &'static [&'static str],
}

impl<'de, V: Visitor<'de>> Visitor<'de> for CaselessVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(CaselessMap {
            inner: map,
            fields: self.fields,
        })
    }
}

struct CaselessMap<A> {
    inner: A,
    fields: &'static [&'static str],
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for CaselessMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.inner.next_key_seed(KeySeed {
            inner: seed,
            fields: self.fields,
        })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

struct KeySeed<K> {
    inner: K,
    fields: &'static [&'static str],
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<K> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<K::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for KeySeed<K> {
    type Value = K::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<K::Value, E> {
        let folded = fold_key(key);
        let canonical = self
            .fields
            .iter()
            .copied()
            .find(|field| fold_key(field) == folded);
        match canonical {
            Some(field) => self
                .inner
                .deserialize(de::value::BorrowedStrDeserializer::new(field)),
            None => self.inner.deserialize(de::value::StrDeserializer::new(key)),
        }
    }
}

/// `pull_policy = "always"` or `pull_policy = ["always", "if-not-present"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OneOrMany(pub(crate) Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    out.push(item);
                }
                Ok(OneOrMany(out))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A Go `time.Duration` as BurntSushi/toml decodes it: a duration string (`"15m"`) or an
/// integer number of nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawDuration {
    Text(String),
    Nanos(i64),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"15m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Nanos(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                i64::try_from(v)
                    .map(RawDuration::Nanos)
                    .map_err(|_| E::custom("duration out of range"))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A timestamp written as a TOML datetime (`2024-05-01T10:00:00Z`, what GitLab Runner writes)
/// or as an RFC 3339 string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawTime(pub(crate) String);

impl<'de> Deserialize<'de> for RawTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(deserializer)? {
            toml::Value::Datetime(dt) => Ok(RawTime(dt.to_string())),
            toml::Value::String(s) => Ok(RawTime(s)),
            other => Err(de::Error::invalid_type(
                unexpected(&other),
                &"a datetime or an RFC 3339 string",
            )),
        }
    }
}

fn unexpected(value: &toml::Value) -> de::Unexpected<'_> {
    match value {
        toml::Value::String(s) => de::Unexpected::Str(s),
        toml::Value::Integer(i) => de::Unexpected::Signed(*i),
        toml::Value::Float(f) => de::Unexpected::Float(*f),
        toml::Value::Boolean(b) => de::Unexpected::Bool(*b),
        toml::Value::Datetime(_) => de::Unexpected::Other("datetime"),
        toml::Value::Array(_) => de::Unexpected::Seq,
        toml::Value::Table(_) => de::Unexpected::Map,
    }
}
