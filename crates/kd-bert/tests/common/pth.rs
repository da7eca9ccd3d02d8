//! Building PyTorch zip checkpoints byte by byte: a protocol-2 pickle writer for the opcodes
//! `torch.save` uses and a stored (uncompressed) zip writer, so tests can craft malformed
//! `pytorch_model.bin` files.

use std::io::Read;
use std::path::Path;

/// A pickle under construction.
#[derive(Debug, Clone, Default)]
pub struct Pickle(pub Vec<u8>);

impl Pickle {
    /// `PROTO 2`.
    pub fn new() -> Self {
        Self(vec![0x80, 2])
    }

    /// Appends raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// `GLOBAL module name`.
    pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.0.push(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }

    /// `BINUNICODE s`.
    pub fn unicode(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    /// The shortest of `BININT1`, `BININT2`, `BININT` for `v`.
    pub fn int(&mut self, v: i64) -> &mut Self {
        if (0..256).contains(&v) {
            self.0.extend_from_slice(&[b'K', v as u8]);
        } else if (0..65536).contains(&v) {
            self.0.push(b'M');
            self.0.extend_from_slice(&(v as u16).to_le_bytes());
        } else if i32::try_from(v).is_ok() {
            self.0.push(b'J');
            self.0.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            self.0.extend_from_slice(&[0x8a, 8]);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    /// One opcode byte without argument (`MARK`, `TUPLE`, `REDUCE`, ...).
    pub fn op(&mut self, op: u8) -> &mut Self {
        self.0.push(op);
        self
    }

    /// `BINPUT i`.
    pub fn put(&mut self, i: u8) -> &mut Self {
        self.0.extend_from_slice(&[b'q', i]);
        self
    }

    /// `BINGET i`.
    pub fn get(&mut self, i: u8) -> &mut Self {
        self.0.extend_from_slice(&[b'h', i]);
        self
    }

    /// A tuple of ints (`MARK ... TUPLE`).
    pub fn int_tuple(&mut self, values: &[i64]) -> &mut Self {
        self.op(MARK);
        for &v in values {
            self.int(v);
        }
        self.op(TUPLE)
    }

    /// `collections.OrderedDict()`, as `torch.save` writes a state dict or backward hooks.
    pub fn ordered_dict(&mut self) -> &mut Self {
        self.global("collections", "OrderedDict")
            .op(EMPTY_TUPLE)
            .op(REDUCE)
    }

    /// One `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, hooks)` call.
    pub fn tensor(&mut self, t: &TensorSpec) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(MARK);
        self.op(MARK)
            .unicode("storage")
            .global("torch", &t.storage_class)
            .unicode(&t.key)
            .unicode("cpu")
            .int(t.numel)
            .op(TUPLE)
            .op(BINPERSID);
        self.int(t.offset).int_tuple(&t.shape).int_tuple(&t.stride);
        self.op(NEWFALSE).ordered_dict().op(TUPLE).op(REDUCE)
    }

    /// `STOP`, returning the bytes.
    pub fn stop(&mut self) -> Vec<u8> {
        self.0.push(STOP);
        self.0.clone()
    }
}

/// `MARK`.
pub const MARK: u8 = b'(';
/// `TUPLE`.
pub const TUPLE: u8 = b't';
/// `EMPTY_TUPLE`.
pub const EMPTY_TUPLE: u8 = b')';
/// `REDUCE`.
pub const REDUCE: u8 = b'R';
/// `BINPERSID`.
pub const BINPERSID: u8 = b'Q';
/// `NEWFALSE`.
pub const NEWFALSE: u8 = 0x89;
/// `SETITEMS`.
pub const SETITEMS: u8 = b'u';
/// `STOP`.
pub const STOP: u8 = b'.';
/// `EMPTY_LIST`.
pub const EMPTY_LIST: u8 = b']';
/// `APPEND`.
pub const APPEND: u8 = b'a';
/// `TUPLE1`.
pub const TUPLE1: u8 = 0x85;
/// `NONE`.
pub const NONE: u8 = b'N';

/// One tensor of a crafted state dict.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    /// Key in the state dict.
    pub name: String,
    /// Storage key (`archive/data/<key>`).
    pub key: String,
    /// `FloatStorage`, `HalfStorage`, ...
    pub storage_class: String,
    /// Elements of the storage as the persistent id states it.
    pub numel: i64,
    /// Storage offset in elements.
    pub offset: i64,
    /// Shape.
    pub shape: Vec<i64>,
    /// Stride in elements.
    pub stride: Vec<i64>,
}

impl TensorSpec {
    /// A contiguous f32 tensor filling its own storage.
    pub fn f32(name: &str, key: &str, shape: &[i64]) -> Self {
        let mut stride = vec![1; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * shape[i + 1];
        }
        Self {
            name: name.into(),
            key: key.into(),
            storage_class: "FloatStorage".into(),
            numel: shape.iter().product(),
            offset: 0,
            shape: shape.to_vec(),
            stride,
        }
    }
}

/// The `data.pkl` of a state dict holding `tensors`, as `torch.save` lays it out.
pub fn state_dict_pickle(tensors: &[TensorSpec]) -> Vec<u8> {
    let mut p = Pickle::new();
    p.ordered_dict().op(MARK);
    for t in tensors {
        p.unicode(&t.name).tensor(t);
    }
    p.op(SETITEMS).stop()
}

/// The entries of a zip file, in order.
pub fn read_zip(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().unwrap().to_string(), data)
        })
        .collect()
}

/// A stored (uncompressed) zip archive of `entries`, with correct CRCs.
pub fn zip_bytes(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32fast::hash(data);
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes()); // version needed
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&0u16.to_le_bytes()); // stored
            v.extend_from_slice(&0u16.to_le_bytes()); // time
            v.extend_from_slice(&0x21u16.to_le_bytes()); // date: 1980-01-01
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // extra length
        };
        out.extend_from_slice(&0x04034b50u32.to_le_bytes());
        common(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);

        central.extend_from_slice(&0x02014b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // version made by
        common(&mut central);
        central.extend_from_slice(&0u16.to_le_bytes()); // comment length
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x06054b50u32.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A PyTorch checkpoint (`archive/data.pkl`, `archive/byteorder`, `archive/data/<key>`)
/// holding `pickle` and the given storages.
pub fn pth_bytes(pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut entries = vec![
        ("archive/data.pkl".to_string(), pickle.to_vec()),
        ("archive/byteorder".to_string(), b"little".to_vec()),
    ];
    for (key, data) in storages {
        entries.push((format!("archive/data/{key}"), data.clone()));
    }
    entries.push(("archive/version".to_string(), b"3\n".to_vec()));
    zip_bytes(&entries)
}
