//! Config value types with units: [`Duration`] (`"250ms"`, `"1h30m"`) and [`ByteSize`]
//! (`"16KiB"`, `"10MB"`, `"10m"`), so a config never holds a bare number whose unit the reader
//! has to guess. Both deserialize from a string or a bare integer and display a canonical form
//! that parses back to the same value.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};

/// A span of time. Written as numbers with units, largest first, each unit once: `ms`, `s`,
/// `m`, `h`, `d` (`"250ms"`, `"1.5s"`, `"1h30m"`). A bare integer means seconds, as in most
/// gateway configs (`timeout: 30`). Negative durations do not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

/// A number of bytes. Units: `B`; `KiB`, `MiB`, `GiB`, `TiB` (1024-based); `KB`, `MB`, `GB`,
/// `TB` (1000-based); `k`, `m`, `g` (1024-based, as in nginx). Units are case-insensitive, so
/// `mb` is a megabyte while `m` is a mebibyte. A fraction is allowed when the result is a whole
/// number of bytes (`1.5MiB`). A bare integer means bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

const DURATION_HELP: &str = "use a number with ms, s, m, h or d, e.g. \"30s\"";
const SIZE_HELP: &str = "use a number with B, KiB, MiB, GiB, KB, MB, GB, k, m or g, e.g. \"10MiB\"";

enum Bad {
    Syntax,
    Overflow,
}

/// `num` × `unit` for `num` = digits with an optional fraction; also whether it was exact.
fn scaled(num: &str, unit: u128) -> Result<(u128, bool), Bad> {
    let (int, frac) = match num.split_once('.') {
        Some((_, "")) => return Err(Bad::Syntax),
        Some(parts) => parts,
        None => (num, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    // 18 fraction digits keep `frac * unit` far from u128 overflow.
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || frac.len() > 18 {
        return Err(Bad::Syntax);
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| Bad::Overflow)? };
    let frac_value: u128 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| Bad::Syntax)? };
    let (scale, part) = (10u128.pow(frac.len() as u32), frac_value * unit);
    let total = int.checked_mul(unit).and_then(|w| w.checked_add(part / scale)).ok_or(Bad::Overflow)?;
    Ok((total, part % scale == 0))
}

const NANOS_PER_MS: u128 = 1_000_000;
const NANOS_PER_S: u128 = 1_000_000_000;
/// Largest first: the order units must be written in.
const DURATION_UNITS: [(&str, u128); 5] = [
    ("d", 86_400 * NANOS_PER_S),
    ("h", 3_600 * NANOS_PER_S),
    ("m", 60 * NANOS_PER_S),
    ("s", NANOS_PER_S),
    ("ms", NANOS_PER_MS),
];

impl Duration {
    /// Parses the config syntax described on the type.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let t = s.trim();
        let bad = |why: &str| format!("invalid duration {s:?}: {why}");
        if t.starts_with('-') {
            return Err(bad("must not be negative"));
        }
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return t.parse().map(|secs| Duration(std::time::Duration::from_secs(secs))).map_err(|_| bad("too large"));
        }
        let (mut rest, mut total, mut prev_rank) = (t, 0u128, None);
        if rest.is_empty() {
            return Err(bad(DURATION_HELP));
        }
        while !rest.is_empty() {
            let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let (num, tail) = rest.split_at(num_end);
            let unit_end = tail.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_end);
            let Some(rank) = DURATION_UNITS.iter().position(|(u, _)| *u == unit) else {
                return Err(bad(DURATION_HELP));
            };
            if prev_rank.is_some_and(|p| p >= rank) {
                return Err(bad("write each unit once, largest first, e.g. \"1h30m\""));
            }
            prev_rank = Some(rank);
            let value = match scaled(num, DURATION_UNITS[rank].1) {
                Ok((v, _)) => v,
                Err(Bad::Syntax) => return Err(bad(DURATION_HELP)),
                Err(Bad::Overflow) => return Err(bad("too large")),
            };
            total = total.checked_add(value).ok_or_else(|| bad("too large"))?;
            rest = tail;
        }
        let secs = u64::try_from(total / NANOS_PER_S).map_err(|_| bad("too large"))?;
        // The remainder is below 10^9, so it fits.
        let nanos = (total % NANOS_PER_S) as u32;
        Ok(Duration(std::time::Duration::new(secs, nanos)))
    }
}

impl fmt::Display for Duration {
    /// Whole milliseconds print as units (`1h30m`, `1s500ms`, `0s`); finer values as seconds
    /// with a fraction (`0.0001s`), which the parser also reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos % NANOS_PER_MS != 0 {
            let frac = format!("{:09}", self.0.subsec_nanos());
            return write!(f, "{}.{}s", self.0.as_secs(), frac.trim_end_matches('0'));
        }
        let mut rest = nanos;
        for (unit, size) in DURATION_UNITS {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

const SIZE_UNITS: [(&str, u128); 13] = [
    ("", 1),
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("k", 1 << 10),
    ("m", 1 << 20),
    ("g", 1 << 30),
];

impl ByteSize {
    /// Parses the config syntax described on the type.
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let bad = |why: &str| format!("invalid size {s:?}: {why}");
        if t.starts_with('-') {
            return Err(bad("must not be negative"));
        }
        let num_end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(num_end);
        let unit = unit.trim_start().to_ascii_lowercase();
        let Some(&(_, size)) = SIZE_UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(bad(SIZE_HELP));
        };
        match scaled(num, size) {
            Ok((v, true)) => u64::try_from(v).map(ByteSize).map_err(|_| bad("too large")),
            Ok((_, false)) => Err(bad("not a whole number of bytes")),
            Err(Bad::Syntax) => Err(bad(SIZE_HELP)),
            Err(Bad::Overflow) => Err(bad("too large")),
        }
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly: `16KiB`, `1536KiB`, `10000B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            if self.0 != 0 && self.0 % (1u64 << shift) == 0 {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// Accepts a string in the unit syntax, or a bare non-negative integer of the default unit.
struct UnitVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for UnitVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.parse)(&v.to_string()).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.parse)(&v.to_string()).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // A bare fraction has no unit to scale it exactly; ask for one.
        Err(E::custom(format!("invalid value {v}: write it with a unit, e.g. \"{v}s\" or \"{v}MiB\"")))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor { expecting: "a duration such as \"30s\"", parse: Duration::parse })
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor { expecting: "a size such as \"10MiB\"", parse: ByteSize::parse })
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{Error, F64Deserializer, I64Deserializer, StrDeserializer, U64Deserializer};
    use std::time::Duration as Std;

    fn dur(s: &str) -> Result<Std, String> {
        Duration::parse(s).map(|d| d.0)
    }

    fn size(s: &str) -> Result<u64, String> {
        ByteSize::parse(s).map(|b| b.0)
    }

    #[test]
    fn durations_parse() {
        assert_eq!(dur("250ms"), Ok(Std::from_millis(250)));
        assert_eq!(dur("30s"), Ok(Std::from_secs(30)));
        assert_eq!(dur("5m"), Ok(Std::from_secs(300)));
        assert_eq!(dur("1h"), Ok(Std::from_secs(3600)));
        assert_eq!(dur("1d"), Ok(Std::from_secs(86_400)));
        assert_eq!(dur("1h30m"), Ok(Std::from_secs(5400)));
        assert_eq!(dur("1.5s"), Ok(Std::from_millis(1500)));
        assert_eq!(dur("2m3s4ms"), Ok(Std::from_millis(123_004)));
        assert_eq!(dur(" 45 "), Ok(Std::from_secs(45)));
        assert_eq!(dur("0"), Ok(Std::ZERO));
        assert_eq!(dur(".5s"), Ok(Std::from_millis(500)));
    }

    #[test]
    fn durations_reject() {
        let help = "use a number with ms, s, m, h or d, e.g. \"30s\"";
        assert_eq!(dur("5x"), Err(format!("invalid duration \"5x\": {help}")));
        assert_eq!(dur(""), Err(format!("invalid duration \"\": {help}")));
        assert_eq!(dur("-5s"), Err("invalid duration \"-5s\": must not be negative".into()));
        for s in ["s", "1.5", "1..5s", "1.s", "1h 30m", "30 s", "ms", "1e3s", "5sec", "１s"] {
            assert!(dur(s).is_err(), "{s} should be rejected");
        }
        assert!(dur("30m1h").expect_err("30m1h").contains("largest first"));
        assert!(dur("1s1s").expect_err("1s1s").contains("largest first"));
        assert!(dur("99999999999999999999999d").expect_err("99999999999999999999999d").contains("too large"));
        assert!(dur("999999999999999999999").expect_err("999999999999999999999").contains("too large"));
        assert!(dur("213503982334602d").expect_err("213503982334602d").contains("too large"));
    }

    #[test]
    fn durations_display_round_trip() {
        for (input, shown) in [
            ("1h30m", "1h30m"),
            ("1.5s", "1s500ms"),
            ("90s", "1m30s"),
            ("0s", "0s"),
            ("250ms", "250ms"),
            ("2d", "2d"),
            ("0.0001s", "0.0001s"),
            ("1.000000001s", "1.000000001s"),
        ] {
            let d = Duration::parse(input).expect(input);
            assert_eq!(d.to_string(), shown);
            assert_eq!(Duration::parse(shown), Ok(d));
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(size("16KiB"), Ok(16 * 1024));
        assert_eq!(size("10MiB"), Ok(10 << 20));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert_eq!(size("512B"), Ok(512));
        assert_eq!(size("1.5MiB"), Ok(1_572_864));
        assert_eq!(size("10KB"), Ok(10_000));
        assert_eq!(size("10MB"), Ok(10_000_000));
        assert_eq!(size("10GB"), Ok(10_000_000_000));
        assert_eq!(size("10k"), Ok(10_240));
        assert_eq!(size("10m"), Ok(10 << 20));
        assert_eq!(size("10g"), Ok(10 << 30));
        assert_eq!(size("10G"), Ok(10 << 30));
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("10 MiB"), Ok(10 << 20));
        assert_eq!(size("0"), Ok(0));
    }

    #[test]
    fn sizes_reject() {
        assert_eq!(
            size("10XB"),
            Err("invalid size \"10XB\": use a number with B, KiB, MiB, GiB, KB, MB, GB, k, m or g, e.g. \"10MiB\""
                .into())
        );
        assert_eq!(size("-1k"), Err("invalid size \"-1k\": must not be negative".into()));
        assert_eq!(size("0.1KiB"), Err("invalid size \"0.1KiB\": not a whole number of bytes".into()));
        assert_eq!(
            size("16EiB"),
            Err("invalid size \"16EiB\": use a number with B, KiB, MiB, GiB, KB, MB, GB, k, m or g, e.g. \"10MiB\""
                .into())
        );
        assert!(size("16777216TiB").expect_err("16777216TiB").contains("too large"));
        assert!(size("18446744073709551616").expect_err("18446744073709551616").contains("too large"));
        assert!(size("999999999999999999999999999999999999999999")
            .expect_err("999999999999999999999999999999999999999999")
            .contains("too large"));
        for s in ["", "MiB", "1.5.5MiB", "1,5MiB", "ten"] {
            assert!(size(s).is_err(), "{s} should be rejected");
        }
        assert_eq!(size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn sizes_display_round_trip() {
        for (input, shown) in [
            ("16KiB", "16KiB"),
            ("1.5MiB", "1536KiB"),
            ("10KB", "10000B"),
            ("0", "0B"),
            ("2g", "2GiB"),
            ("3TiB", "3TiB"),
        ] {
            let b = ByteSize::parse(input).expect(input);
            assert_eq!(b.to_string(), shown);
            assert_eq!(ByteSize::parse(shown), Ok(b));
        }
    }

    #[test]
    fn serde_forms() {
        let d = Duration::deserialize(StrDeserializer::<Error>::new("1h30m")).expect("str");
        assert_eq!(d.0, Std::from_secs(5400));
        let d = Duration::deserialize(U64Deserializer::<Error>::new(30)).expect("int");
        assert_eq!(d.0, Std::from_secs(30));
        assert!(Duration::deserialize(I64Deserializer::<Error>::new(-3)).is_err());
        let e = Duration::deserialize(F64Deserializer::<Error>::new(1.5)).expect_err("float");
        assert!(e.to_string().contains("with a unit"), "{e}");
        let e = Duration::deserialize(StrDeserializer::<Error>::new("5x")).expect_err("bad");
        assert_eq!(e.to_string(), "invalid duration \"5x\": use a number with ms, s, m, h or d, e.g. \"30s\"");
        let b = ByteSize::deserialize(U64Deserializer::<Error>::new(512)).expect("int");
        assert_eq!(b, ByteSize(512));
        let b = ByteSize::deserialize(StrDeserializer::<Error>::new("10MiB")).expect("str");
        assert_eq!(b, ByteSize(10 << 20));
    }
}
