//! `ShareableList`: CPython's fixed-length list in a named shared memory block.

use super::SharedMemory;
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};

/// One element of a [`ShareableList`]: the types Python's `ShareableList`
/// stores.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// Python `int` (64-bit, struct format `q`).
    Int(i64),
    /// Python `float` (struct format `d`).
    Float(f64),
    /// Python `bool`.
    Bool(bool),
    /// Python `str` (UTF-8, without NUL bytes: trailing NULs are stripped on
    /// reading, as in Python).
    Str(String),
    /// Python `bytes` (trailing NULs are stripped on reading, as in Python).
    Bytes(Vec<u8>),
    /// Python `None`.
    None,
}

impl From<i64> for Item {
    fn from(v: i64) -> Item {
        Item::Int(v)
    }
}
impl From<f64> for Item {
    fn from(v: f64) -> Item {
        Item::Float(v)
    }
}
impl From<bool> for Item {
    fn from(v: bool) -> Item {
        Item::Bool(v)
    }
}
impl From<&str> for Item {
    fn from(v: &str) -> Item {
        Item::Str(v.to_string())
    }
}
impl From<String> for Item {
    fn from(v: String) -> Item {
        Item::Str(v)
    }
}
impl From<&[u8]> for Item {
    fn from(v: &[u8]) -> Item {
        Item::Bytes(v.to_vec())
    }
}
impl From<Vec<u8>> for Item {
    fn from(v: Vec<u8>) -> Item {
        Item::Bytes(v)
    }
}

const FMT_BOOL: &str = "xxxxxxx?";
const FMT_NONE: &str = "xxxxxx?x";

impl Item {
    /// Python's struct format for the value, and how many data bytes it takes.
    fn format(&self) -> (String, usize) {
        match self {
            Item::Int(_) => ("q".into(), 8),
            Item::Float(_) => ("d".into(), 8),
            Item::Bool(_) => (FMT_BOOL.into(), 8),
            Item::None => (FMT_NONE.into(), 8),
            Item::Str(s) => {
                let n = 8 * (s.len() / 8 + 1);
                (format!("{n}s"), n)
            }
            Item::Bytes(b) => {
                let n = 8 * (b.len() / 8 + 1);
                (format!("{n}s"), n)
            }
        }
    }

    /// Python's `_extract_recreation_code`.
    fn code(&self) -> u8 {
        match self {
            Item::Str(_) => 1,
            Item::Bytes(_) => 2,
            Item::None => 3,
            _ => 0,
        }
    }
}

/// A fixed-length list of [`Item`]s in a named [`SharedMemory`] block
/// (Python's `multiprocessing.shared_memory.ShareableList`).
///
/// The block's layout is CPython's byte for byte (item count, offsets, the
/// packed values, each item's `struct` format and its recreation code), so a
/// Python process can open the list with `ShareableList(name=...)` and read
/// or write it, and this type can open a list Python made. As in Python, the
/// length is fixed, a `str`/`bytes` slot holds at most the bytes reserved when
/// the list was made (rounded up to a multiple of 8, at least one more than
/// the initial value), and any other item takes 8 bytes. One difference:
/// Python 3.11 registers a list it merely *attaches* to with its own resource
/// tracker, which unlinks it when that Python process ends (a CPython bug,
/// fixed in 3.13 with `track=False`); call
/// `resource_tracker.unregister(sl.shm._name, "shared_memory")` there.
///
/// Reads and writes of an item are not atomic: several writers need a lock.
///
/// ```
/// use multiproc::shared::{Item, ShareableList};
///
/// # multiproc::test_support!();
/// # fn main() -> multiproc::Result<()> {
/// let sl = ShareableList::new(&[Item::Int(7), "hi".into(), Item::None])?;
/// sl.set(0, Item::Float(0.5))?;
/// let other = ShareableList::open(sl.name())?;
/// assert_eq!(other.to_vec()?, vec![Item::Float(0.5), Item::Str("hi".into()), Item::None]);
/// assert_eq!(other.format()?, "d8sxxxxxx?x");
/// assert!(sl.set(1, "far too long for this slot".into()).is_err());
/// sl.shm().unlink()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ShareableList {
    shm: SharedMemory,
    len: usize,
    /// `len + 1` offsets of the items into the data area.
    offsets: Vec<usize>,
}

impl ShareableList {
    /// Creates a list holding `items` in a new block with a generated name.
    ///
    /// # Errors
    ///
    /// `Io` if the block cannot be created.
    pub fn new(items: &[Item]) -> Result<ShareableList> {
        Self::create(None, items)
    }

    /// Creates a list holding `items` in a new block called `name`.
    ///
    /// # Errors
    ///
    /// As [`SharedMemory::create_named`] (e.g. the name exists).
    pub fn new_named(name: &str, items: &[Item]) -> Result<ShareableList> {
        Self::create(Some(name), items)
    }

    fn create(name: Option<&str>, items: &[Item]) -> Result<ShareableList> {
        let n = items.len();
        let formats: Vec<(String, usize)> = items.iter().map(Item::format).collect();
        let mut offsets = Vec::with_capacity(n + 1);
        let mut off = 0usize;
        offsets.push(0);
        for (_, sz) in &formats {
            off += sz;
            offsets.push(off);
        }
        // struct.calcsize("q" + "q"*(n+1) + formats + "8s"*n + "b"*n)
        let size = 8 + 8 * (n + 1) + off + 8 * n + n;
        let shm = match name {
            Some(name) => SharedMemory::create_named(name, size)?,
            None => SharedMemory::create(size)?,
        };
        let list = ShareableList {
            shm,
            len: n,
            offsets,
        };
        let mut head = Vec::with_capacity(8 * (n + 2));
        head.extend_from_slice(&(n as i64).to_le_bytes());
        for &o in &list.offsets {
            head.extend_from_slice(&(o as i64).to_le_bytes());
        }
        list.shm.write_at(0, &head)?;
        for (i, item) in items.iter().enumerate() {
            list.write_item(i, item, &formats[i].0)?;
        }
        Ok(list)
    }

    /// Opens the list in the existing block called `name` (Python's
    /// `ShareableList(name=...)`).
    ///
    /// # Errors
    ///
    /// As [`SharedMemory::open`]; `Invalid` if the block does not hold a
    /// well-formed list.
    pub fn open(name: &str) -> Result<ShareableList> {
        Self::from_shm(SharedMemory::open(name)?)
    }

    fn from_shm(shm: SharedMemory) -> Result<ShareableList> {
        let bad = || {
            Error::Invalid(format!(
                "shared memory block {:?} does not hold a ShareableList",
                shm.name()
            ))
        };
        let n = read_i64(&shm, 0)?;
        let n = usize::try_from(n).map_err(|_| bad())?;
        let head = n
            .checked_add(2)
            .and_then(|k| k.checked_mul(8))
            .ok_or_else(bad)?;
        if head > shm.size() {
            return Err(bad());
        }
        let mut offsets = Vec::with_capacity(n + 1);
        for i in 0..=n {
            let o = usize::try_from(read_i64(&shm, 8 + 8 * i)?).map_err(|_| bad())?;
            if offsets.last().is_some_and(|&p| o < p) {
                return Err(bad());
            }
            offsets.push(o);
        }
        let end = head
            .checked_add(offsets[n])
            .and_then(|x| x.checked_add(9 * n))
            .ok_or_else(bad)?;
        if end > shm.size() {
            return Err(bad());
        }
        Ok(ShareableList {
            shm,
            len: n,
            offsets,
        })
    }

    /// The number of items (fixed).
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` if the list has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The block's name, for [`open`](Self::open) or Python's
    /// `ShareableList(name=...)`.
    pub fn name(&self) -> &str {
        self.shm.name()
    }

    /// The underlying block (e.g. to [`unlink`](SharedMemory::unlink) it).
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    fn data_start(&self) -> usize {
        (self.len + 2) * 8
    }

    fn formats_start(&self) -> usize {
        self.data_start() + self.offsets[self.len]
    }

    fn codes_start(&self) -> usize {
        self.formats_start() + 8 * self.len
    }

    fn check_index(&self, i: usize) -> Result<()> {
        if i >= self.len {
            return Err(Error::Invalid(format!(
                "index {i} out of range for a list of {}",
                self.len
            )));
        }
        Ok(())
    }

    fn item_format(&self, i: usize) -> Result<String> {
        let mut f = [0u8; 8];
        self.shm.read_at(self.formats_start() + 8 * i, &mut f)?;
        let end = f.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        String::from_utf8(f[..end].to_vec())
            .map_err(|_| Error::codec(format!("item {i} has a corrupt format")))
    }

    /// Item `i` (Python's `sl[i]`).
    ///
    /// # Errors
    ///
    /// `Invalid` if `i` is out of range; `Codec` if the stored item is corrupt.
    pub fn get(&self, i: usize) -> Result<Item> {
        self.check_index(i)?;
        let fmt = self.item_format(i)?;
        let mut code = [0u8; 1];
        self.shm.read_at(self.codes_start() + i, &mut code)?;
        let at = self.data_start() + self.offsets[i];
        let corrupt = || Error::codec(format!("item {i} has an unsupported format {fmt:?}"));
        let mut word = [0u8; 8];
        match (fmt.as_str(), code[0]) {
            (_, 3) => Ok(Item::None),
            ("q", 0) => {
                self.shm.read_at(at, &mut word)?;
                Ok(Item::Int(i64::from_le_bytes(word)))
            }
            ("d", 0) => {
                self.shm.read_at(at, &mut word)?;
                Ok(Item::Float(f64::from_le_bytes(word)))
            }
            (FMT_BOOL, 0) => {
                self.shm.read_at(at, &mut word)?;
                Ok(Item::Bool(word[7] != 0))
            }
            (f, c @ (1 | 2)) if f.ends_with('s') => {
                let n: usize = f[..f.len() - 1].parse().map_err(|_| corrupt())?;
                let mut bytes = vec![0u8; n];
                self.shm.read_at(at, &mut bytes)?;
                let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                bytes.truncate(end);
                if c == 1 {
                    String::from_utf8(bytes)
                        .map(Item::Str)
                        .map_err(|_| corrupt())
                } else {
                    Ok(Item::Bytes(bytes))
                }
            }
            _ => Err(corrupt()),
        }
    }

    /// Replaces item `i` (Python's `sl[i] = value`). A `str`/`bytes` value
    /// must fit the slot's reserved bytes; any type may replace any other.
    ///
    /// # Errors
    ///
    /// `Invalid` if `i` is out of range or the value does not fit.
    pub fn set(&self, i: usize, value: Item) -> Result<()> {
        self.check_index(i)?;
        let allocated = self.offsets[i + 1] - self.offsets[i];
        let fmt = match &value {
            Item::Str(s) if s.len() > allocated => None,
            Item::Bytes(b) if b.len() > allocated => None,
            Item::Str(_) | Item::Bytes(_) => {
                let current = self.item_format(i)?;
                Some(if current.ends_with('s') {
                    current
                } else {
                    format!("{allocated}s")
                })
            }
            other => Some(other.format().0),
        };
        let fmt =
            fmt.ok_or_else(|| Error::Invalid("bytes/str item exceeds available storage".into()))?;
        self.write_item(i, &value, &fmt)
    }

    fn write_item(&self, i: usize, value: &Item, fmt: &str) -> Result<()> {
        let mut f = [0u8; 8];
        f[..fmt.len().min(8)].copy_from_slice(&fmt.as_bytes()[..fmt.len().min(8)]);
        self.shm.write_at(self.formats_start() + 8 * i, &f)?;
        self.shm.write_at(self.codes_start() + i, &[value.code()])?;
        let at = self.data_start() + self.offsets[i];
        match value {
            Item::Int(v) => self.shm.write_at(at, &v.to_le_bytes()),
            Item::Float(v) => self.shm.write_at(at, &v.to_le_bytes()),
            Item::Bool(b) => self.shm.write_at(at, &[0, 0, 0, 0, 0, 0, 0, *b as u8]),
            Item::None => self.shm.write_at(at, &[0; 8]),
            Item::Str(_) | Item::Bytes(_) => {
                let data = match value {
                    Item::Str(s) => s.as_bytes(),
                    Item::Bytes(b) => b.as_slice(),
                    _ => &[],
                };
                // Python's `struct.pack("Ns", v)` pads with NULs to N bytes.
                let n: usize = fmt[..fmt.len() - 1]
                    .parse()
                    .map_err(|_| Error::codec(format!("bad format {fmt}")))?;
                let mut buf = vec![0u8; n];
                buf[..data.len()].copy_from_slice(data);
                self.shm.write_at(at, &buf)
            }
        }
    }

    /// Every item, in order (Python's `list(sl)`).
    ///
    /// # Errors
    ///
    /// `Codec` if an item is corrupt.
    pub fn to_vec(&self) -> Result<Vec<Item>> {
        (0..self.len).map(|i| self.get(i)).collect()
    }

    /// The `struct` format of all items (Python's `sl.format`).
    ///
    /// # Errors
    ///
    /// `Codec` if a format is corrupt.
    pub fn format(&self) -> Result<String> {
        (0..self.len).map(|i| self.item_format(i)).collect()
    }
}

impl Handoff for ShareableList {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.shm.export(ex)
    }

    fn import(im: &mut Importer) -> Result<Self> {
        Self::from_shm(SharedMemory::import(im)?)
    }
}

fn read_i64(shm: &SharedMemory, at: usize) -> Result<i64> {
    let mut w = [0u8; 8];
    shm.read_at(at, &mut w)?;
    Ok(i64::from_le_bytes(w))
}
