//! The codec against postcard (same bytes both ways), hostile input, and
//! the byte-payload fast path.

use super::*;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    Newtype(i64),
    Tuple(u8, i16, char),
    Struct { a: Option<u32>, b: Vec<u8>, c: f32 },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Everything {
    b: bool,
    i8: i8,
    i16: i16,
    i32: i32,
    i64: i64,
    i128: i128,
    u8: u8,
    u16: u16,
    u32: u32,
    u64: u64,
    u128: u128,
    f64: f64,
    s: String,
    bytes: serde_bytes_like::Bytes,
    shapes: Vec<Shape>,
    map: BTreeMap<String, (u64, Option<bool>)>,
    unit: (),
}

mod serde_bytes_like {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    #[derive(Debug, PartialEq)]
    pub struct Bytes(pub Vec<u8>);
    impl Serialize for Bytes {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Ok(Bytes(Vec::<u8>::deserialize(d)?))
        }
    }
}

fn sample(i: i64) -> Everything {
    Everything {
        b: i % 2 == 0,
        i8: -((i % 128) as i8),
        i16: (i * 300) as i16,
        i32: -(i as i32) * 70_001,
        i64: i64::MIN + i,
        i128: -(i as i128) << 90,
        u8: i as u8,
        u16: (i * 517) as u16,
        u32: u32::MAX - i as u32,
        u64: (i as u64) << 40,
        u128: u128::MAX - i as u128,
        f64: i as f64 / 7.0,
        s: "é∂".repeat(i as usize % 9),
        bytes: serde_bytes_like::Bytes(vec![i as u8; i as usize % 5]),
        shapes: vec![
            Shape::Unit,
            Shape::Newtype(-i),
            Shape::Tuple(3, -4, 'ß'),
            Shape::Struct {
                a: (i % 3 == 0).then_some(i as u32),
                b: vec![1, 2],
                c: 0.5,
            },
        ],
        map: (0..i % 4)
            .map(|k| (format!("k{k}"), (k as u64, Some(k % 2 == 0))))
            .collect(),
        unit: (),
    }
}

#[test]
fn same_bytes_as_postcard() {
    let values: Vec<Everything> = (0..200).map(sample).collect();
    let mut out = Vec::new();
    let mut want = Vec::new();
    for v in &values {
        put(v, &mut out).unwrap();
        want.extend(postcard::to_stdvec(v).unwrap());
    }
    assert_eq!(out, want);
    let mut rd = Reader::new(&out);
    for v in &values {
        assert_eq!(&rd.next::<Everything>().unwrap(), v);
    }
    assert!(rd.next::<u8>().is_err());
    for x in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
        let mut a = Vec::new();
        put(&x, &mut a).unwrap();
        assert_eq!(a, postcard::to_stdvec(&x).unwrap());
    }
}

#[test]
fn malformed_input_is_an_error() {
    let bad: &[(&[u8], &str)] = &[
        (&[], "empty"),
        (&[0x80, 0x80], "truncated varint"),
        (&[0xff; 11], "overlong varint"),
        (&[5, b'a'], "truncated string"),
        (&[2, 0xff, 0xfe], "bad utf-8"),
    ];
    for (bytes, what) in bad {
        let r = Reader::new(bytes).next::<(u64, String)>();
        assert!(r.is_err(), "{what}");
    }
    assert!(Reader::new(&[2]).next::<bool>().is_err());
    assert!(Reader::new(&[7]).next::<Option<u8>>().is_err());
    // A huge announced length does not allocate it up front.
    let r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x0f]).next::<Vec<u64>>();
    assert!(r.is_err());
    assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x1f])
        .next::<u32>()
        .is_err());
}

/// Encodes with the codec, checks the bytes are postcard's, and decodes
/// with both.
fn round_trip<T>(v: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let ours = encode(v).unwrap();
    assert_eq!(ours, postcard::to_stdvec(v).unwrap(), "{v:?}");
    assert_eq!(&decode::<T>(&ours).unwrap(), v);
    assert_eq!(&postcard::from_bytes::<T>(&ours).unwrap(), v);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct WithBytes {
    id: u32,
    data: Vec<u8>,
    boxed: Box<[u8]>,
    maybe: Option<Vec<u8>>,
    many: Vec<Vec<u8>>,
    keyed: BTreeMap<Vec<u8>, Vec<u8>>,
    tagged: Shape,
}

/// Byte payloads, at the top and nested anywhere, encode to postcard's
/// bytes (the fast path writes what serde's sequence form writes) and come
/// back equal.
#[test]
fn byte_payloads_keep_the_format() {
    for n in [0usize, 1, 127, 128, 300, 70_000] {
        let v: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
        round_trip(&v);
        round_trip(&v.clone().into_boxed_slice());
        round_trip(&(v.clone(), 5u8, v.clone()));
        round_trip(&Some(v.clone()));
        round_trip(&WithBytes {
            id: n as u32,
            data: v.clone(),
            boxed: v.clone().into(),
            maybe: Some(v.clone()),
            many: vec![v.clone(), vec![], v.clone()],
            keyed: [(v.clone(), v.clone()), (vec![1], vec![])].into(),
            tagged: Shape::Struct {
                a: None,
                b: v.clone(),
                c: 1.5,
            },
        });
        // Borrowed forms encode the same; serde_bytes's too.
        let want = postcard::to_stdvec(&v).unwrap();
        assert_eq!(encode(&v[..]).unwrap(), want);
        assert_eq!(encode(&&v[..]).unwrap(), want);
        assert_eq!(encode(&(&v,)).unwrap(), want);
        assert_eq!(
            encode(&serde_bytes::ByteBuf::from(v.clone())).unwrap(),
            want
        );
        let back: serde_bytes::ByteBuf = decode(&want).unwrap();
        assert_eq!(back.into_vec(), v);
        let (b, rest) = decode_borrowed::<&[u8]>(&want).unwrap();
        assert_eq!((b, rest), (&v[..], &[][..]));
        // The length prefix alone, as a caller sending the payload itself
        // writes it.
        let (h, used) = bytes_header(n);
        assert_eq!(&want[..used], &h[..used]);
        assert_eq!(read_bytes_header(&want), Some((n as u64, used)));
    }
}

/// A visitor of someone else's that makes a `Vec<u8>` out of a sequence of
/// other things is not taken for serde's `Vec<u8>` visitor.
#[test]
fn other_visitors_of_byte_vectors_are_left_alone() {
    #[derive(Debug, PartialEq)]
    struct Low(Vec<u8>);
    impl Serialize for Low {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            let wide: Vec<u16> = self.0.iter().map(|&b| u16::from(b) << 8).collect();
            wide.serialize(s)
        }
    }
    impl<'de> Deserialize<'de> for Low {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a sequence of u16")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> std::result::Result<Vec<u8>, A::Error> {
                    let mut out = Vec::new();
                    while let Some(w) = seq.next_element::<u16>()? {
                        out.push((w >> 8) as u8);
                    }
                    Ok(out)
                }
            }
            d.deserialize_seq(V).map(Low)
        }
    }
    let v = Low(vec![1, 2, 200, 255]);
    let bytes = encode(&v).unwrap();
    assert_eq!(bytes, postcard::to_stdvec(&v).unwrap());
    assert_eq!(decode::<Low>(&bytes).unwrap(), v);
}

/// Hostile byte payloads: a short one, and a length far past the input
/// (refused, not allocated).
#[test]
fn truncated_byte_payloads_are_errors() {
    let full = encode(&vec![9u8; 1000]).unwrap();
    for cut in [0, 1, 2, 500, 999, 1001] {
        assert!(decode::<Vec<u8>>(&full[..cut]).is_err(), "cut at {cut}");
        assert!(decode::<(u8, Vec<u8>)>(&[&[1u8][..], &full[..cut]].concat()).is_err());
    }
    let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2];
    assert!(decode::<Vec<u8>>(&huge).is_err());
    assert!(decode::<Box<[u8]>>(&huge).is_err());
    assert_eq!(read_bytes_header(&huge[..3]), None);
}

/// `encode_to_slice` reports a buffer too small instead of writing past
/// it, also for a long sequence (stopped early) and a byte payload.
#[test]
fn encoding_into_a_fixed_buffer() {
    let mut buf = [0u8; 16];
    let n = encode_to_slice(&(1u64, "ab"), &mut buf).unwrap();
    assert_eq!(&buf[..n], &postcard::to_stdvec(&(1u64, "ab")).unwrap()[..]);
    let long = vec![1u64 << 40; 1000];
    assert!(matches!(
        encode_to_slice(&long, &mut buf),
        Err(postcard::Error::SerializeBufferFull)
    ));
    assert!(encode_to_slice(&vec![0u8; 100], &mut buf).is_err());
    assert_eq!(encode_to_slice(&vec![7u8; 15], &mut buf).unwrap(), 16);
}
