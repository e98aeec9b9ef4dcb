//! How each kind of envelope field is read, for the typed envelope's `deserialize_with`: what
//! is accepted and the wording of a refusal (`expected a string, found the number 5`).
//!
//! serde's own refusals echo the value whole (`invalid type: string "<the whole QR code>"`);
//! these visitors name the JSON type and quote only short scalars instead, so a QR code or a
//! message text that lands in the wrong field is never sent back. Each visitor implements
//! every `visit_*` method a JSON value can reach, through [`Visit`].

use super::{Direction, EventType, MAX_SESSION_LEN};
use crate::queue::{MAX_ID_LEN, is_sqs_id};
use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A JSON value as a refusal names it.
pub(super) enum Found<'a> {
    Null,
    Bool(bool),
    Number(String),
    Str(&'a str),
    Array,
    Object,
}

impl fmt::Display for Found<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Null => f.write_str("null"),
            Found::Bool(b) => write!(f, "{b}"),
            Found::Number(n) => write!(f, "the number {n}"),
            Found::Str(s) => f.write_str(&describe_str(s)),
            Found::Array => f.write_str("an array"),
            Found::Object => f.write_str("an object"),
        }
    }
}

/// "expected X, found Y": Y names the JSON type and shows only scalars, strings cut.
pub(super) fn expected(what: &str, found: Found<'_>) -> String {
    format!("expected {what}, found {found}")
}

/// A string as a refusal quotes it: whole up to 40 characters, else its length and start.
pub(super) fn describe_str(s: &str) -> String {
    const SHOWN: usize = 40;
    if s.chars().count() <= SHOWN {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(SHOWN).collect();
        format!("a {}-character string starting {head:?}", s.chars().count())
    }
}

/// One kind of field: what it is called in a refusal, and what it does with the JSON values
/// it accepts; every other value is refused as "expected {WHAT}, found …".
trait Expect<'de>: Sized {
    type Value;
    const WHAT: &'static str;

    fn string(self, found: &str) -> Result<Self::Value, String> {
        Err(expected(Self::WHAT, Found::Str(found)))
    }

    /// A string that lives as long as the input (as in a parsed `serde_json::Value`).
    fn borrowed(self, found: &'de str) -> Result<Self::Value, String> {
        self.string(found)
    }

    fn boolean(self, found: bool) -> Result<Self::Value, String> {
        Err(expected(Self::WHAT, Found::Bool(found)))
    }

    fn object<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drop(map);
        Err(de::Error::custom(expected(Self::WHAT, Found::Object)))
    }
}

/// The serde visitor of an [`Expect`]: every JSON value lands in one of its methods.
struct Visit<T>(T);

fn number<E: de::Error>(what: &str, n: impl fmt::Display) -> E {
    E::custom(expected(what, Found::Number(n.to_string())))
}

impl<'de, T: Expect<'de>> Visitor<'de> for Visit<T> {
    type Value = T::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::WHAT)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.0.boolean(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Err(number(T::WHAT, v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Err(number(T::WHAT, v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // As JSON writes it (`1e20`, not Rust's `100000000000000000000`).
        match serde_json::Number::from_f64(v) {
            Some(n) => Err(number(T::WHAT, n)),
            None => Err(number(T::WHAT, v)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.0.string(v).map_err(E::custom)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.0.borrowed(v).map_err(E::custom)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom(expected(T::WHAT, Found::Null)))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drop(seq);
        Err(de::Error::custom(expected(T::WHAT, Found::Array)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.object(map)
    }
}

/// A required field of kind `T`.
fn one<'de, D: Deserializer<'de>, T: Expect<'de> + Default>(d: D) -> Result<T::Value, D::Error> {
    d.deserialize_any(Visit(T::default()))
}

/// An optional field of kind `T`: `null` reads as absent (the field also needs
/// `#[serde(default)]`, for when it is missing).
fn maybe<'de, D, T>(d: D) -> Result<Option<T::Value>, D::Error>
where
    D: Deserializer<'de>,
    T: Expect<'de> + Default,
{
    struct One<'de, T: Expect<'de>>(T::Value, PhantomData<(T, &'de ())>);
    impl<'de, T: Expect<'de> + Default> Deserialize<'de> for One<'de, T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            one::<D, T>(d).map(|v| One(v, PhantomData))
        }
    }
    Ok(Option::<One<'de, T>>::deserialize(d)?.map(|one| one.0))
}

#[derive(Default)]
struct Text;

impl<'de> Expect<'de> for Text {
    type Value = Cow<'de, str>;
    const WHAT: &'static str = "a string";

    fn string(self, found: &str) -> Result<Self::Value, String> {
        Ok(Cow::Owned(found.to_owned()))
    }

    fn borrowed(self, found: &'de str) -> Result<Self::Value, String> {
        Ok(Cow::Borrowed(found))
    }
}

#[derive(Default)]
struct Flag;

impl Expect<'_> for Flag {
    type Value = bool;
    const WHAT: &'static str = "true or false";

    fn boolean(self, found: bool) -> Result<bool, String> {
        Ok(found)
    }
}

/// A nested object, read by `T`'s own derive (which names its missing fields).
struct Object<T>(PhantomData<T>);

impl<T> Default for Object<T> {
    fn default() -> Self {
        Object(PhantomData)
    }
}

impl<'de, T: Deserialize<'de>> Expect<'de> for Object<T> {
    type Value = T;
    const WHAT: &'static str = "an object";

    fn object<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// An object whose content is read later (`data`, by event type).
#[derive(Default)]
pub(super) struct AnObject;

impl<'de> Expect<'de> for AnObject {
    type Value = AnObject;
    const WHAT: &'static str = "an object";

    fn object<A: MapAccess<'de>>(self, mut map: A) -> Result<AnObject, A::Error> {
        // Skipping a `serde_json::Value` does not walk it.
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(AnObject)
    }
}

impl<'de> Deserialize<'de> for AnObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one::<D, AnObject>(d)
    }
}

#[derive(Default)]
struct DateTime;

impl<'de> Expect<'de> for DateTime {
    type Value = Cow<'de, str>;
    const WHAT: &'static str = r#"an RFC 3339 date-time such as "2025-12-21T18:22:44.850Z""#;

    fn string(self, found: &str) -> Result<Self::Value, String> {
        self.borrowed(found).map(|s| Cow::Owned(s.into_owned()))
    }

    fn borrowed(self, found: &'de str) -> Result<Self::Value, String> {
        match OffsetDateTime::parse(found, &Rfc3339) {
            Ok(_) => Ok(Cow::Borrowed(found)),
            Err(_) => Err(expected(Self::WHAT, Found::Str(found))),
        }
    }
}

/// A string that becomes part of an SQS id: 1 to `MAX` ASCII letters, digits or punctuation.
#[derive(Default)]
struct SqsId<const MAX: usize>;

impl<'de, const MAX: usize> Expect<'de> for SqsId<MAX> {
    type Value = Cow<'de, str>;
    const WHAT: &'static str = "a string";

    fn string(self, found: &str) -> Result<Self::Value, String> {
        self.borrowed(found).map(|s| Cow::Owned(s.into_owned()))
    }

    fn borrowed(self, found: &'de str) -> Result<Self::Value, String> {
        if is_sqs_id(found, MAX) {
            Ok(Cow::Borrowed(found))
        } else {
            Err(format!(
                "expected 1 to {MAX} ASCII letters, digits or punctuation (no spaces), found {}",
                describe_str(found)
            ))
        }
    }
}

/// One of a fixed set of names (`event`, `direction`).
struct Name<T>(PhantomData<T>);

impl<T> Default for Name<T> {
    fn default() -> Self {
        Name(PhantomData)
    }
}

/// A closed set of names, as the wire spells them.
pub(super) trait Names: Sized + 'static {
    /// `one of "status", "qr", "message"`.
    const WHAT: &'static str;
    fn parse(name: &str) -> Option<Self>;
}

impl<T: Names> Expect<'_> for Name<T> {
    type Value = T;
    const WHAT: &'static str = T::WHAT;

    fn string(self, found: &str) -> Result<T, String> {
        T::parse(found).ok_or_else(|| expected(T::WHAT, Found::Str(found)))
    }
}

impl Names for EventType {
    const WHAT: &'static str = r#"one of "status", "qr", "message""#;

    fn parse(name: &str) -> Option<Self> {
        EventType::parse(name)
    }
}

impl Names for Direction {
    const WHAT: &'static str = r#""incoming" or "outgoing""#;

    fn parse(name: &str) -> Option<Self> {
        match name {
            "incoming" => Some(Direction::Incoming),
            "outgoing" => Some(Direction::Outgoing),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one::<D, Name<EventType>>(d)
    }
}

impl<'de> Deserialize<'de> for Direction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one::<D, Name<Direction>>(d)
    }
}

// The `deserialize_with` functions of the typed envelope, one per kind of field.

pub(super) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
    one::<D, Text>(d)
}

pub(super) fn opt_string<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    maybe::<D, Text>(d)
}

pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    one::<D, Flag>(d)
}

pub(super) fn opt_boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    maybe::<D, Flag>(d)
}

pub(super) fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    one::<D, Object<T>>(d)
}

pub(super) fn opt_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    maybe::<D, Object<T>>(d)
}

pub(super) fn rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
    one::<D, DateTime>(d)
}

pub(super) fn opt_session<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    maybe::<D, SqsId<MAX_SESSION_LEN>>(d)
}

pub(super) fn opt_event_id<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    maybe::<D, SqsId<MAX_ID_LEN>>(d)
}
