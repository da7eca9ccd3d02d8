//! A bounded pre-check of a PyTorch `data.pkl` before candle's pickle reader sees it.
//!
//! candle's reader (`candle_core::pickle`) builds the whole object tree, deep-copies objects on
//! every memo get and put, recurses over nesting, and indexes into argument tuples without
//! checking their length. This module walks the same opcodes with the same semantics (copies
//! share their children here, so walking costs no more than reading), charging every object at
//! the size candle would give it. A pickle is refused, with the byte offset of the opcode at
//! fault, when candle would allocate more than a fixed budget, clone more than a fixed amount,
//! nest deeper than a fixed depth, or panic on a malformed tensor record. Nothing in the pickle
//! is ever executed: globals are names, reduces are records.
//!
//! The walk also yields every tensor record of the state dict exactly as candle will read it
//! (name, storage, dtype, offset, shape, stride), so the caller can check each against the
//! size of its storage before candle allocates anything.

use candle_core::DType;
use std::collections::HashMap;
use std::rc::Rc;

/// Largest `data.pkl` accepted (real ones are well under a megabyte per thousand tensors).
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Most memory, estimated as candle's reader would use it, that the live objects may take.
const MAX_LIVE_BYTES: u64 = 256 << 20;
/// Most bytes of objects candle may deep-copy through the memo over the whole pickle.
const MAX_COPIED_BYTES: u64 = 1 << 30;
/// Deepest object nesting accepted (candle clones and drops objects recursively).
const MAX_DEPTH: u32 = 64;
/// Estimated bytes of one object in candle's reader, besides its strings.
const NODE_BYTES: u64 = 64;

/// An object as candle's reader represents it (unused payloads are not kept).
#[derive(Debug, Clone)]
enum Node {
    Class(String, String),
    Int(i32),
    Long(i64),
    Unicode(String),
    Scalar,
    Tuple(Vec<Obj>),
    List(Vec<Obj>),
    Mark,
    Dict(Vec<(Obj, Obj)>),
    Reduce(Obj, Obj),
    Build(Obj, Obj),
    Persistent(Obj),
}

/// An object with the size and depth of its full (unshared) copy.
#[derive(Debug, Clone)]
struct Item {
    node: Node,
    bytes: u64,
    depth: u32,
}

type Obj = Rc<Item>;

fn make(node: Node) -> Result<Obj, String> {
    let (mut bytes, mut depth) = (NODE_BYTES, 0u32);
    let mut add = |o: &Obj| {
        bytes = bytes.saturating_add(o.bytes);
        depth = depth.max(o.depth);
    };
    match &node {
        Node::Class(m, c) => bytes += (m.len() + c.len()) as u64,
        Node::Unicode(s) => bytes += s.len() as u64,
        Node::Tuple(v) | Node::List(v) => v.iter().for_each(&mut add),
        Node::Dict(v) => v.iter().for_each(|(k, x)| {
            add(k);
            add(x)
        }),
        Node::Reduce(a, b) | Node::Build(a, b) => {
            add(a);
            add(b)
        }
        Node::Persistent(a) => add(a),
        Node::Int(_) | Node::Long(_) | Node::Scalar | Node::Mark => {}
    }
    let depth = depth + 1;
    if depth > MAX_DEPTH {
        return Err(format!("objects nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(Rc::new(Item { node, bytes, depth }))
}

/// One tensor record of the state dict, as candle will read it.
#[derive(Debug, Clone, PartialEq)]
pub struct PickledTensor {
    /// Key in the state dict.
    pub name: String,
    /// Storage key (the zip entry is `<archive>/data/<key>`).
    pub storage: String,
    /// Element type of the storage.
    pub dtype: DType,
    /// Elements of the storage, as its persistent id states.
    pub storage_len: u64,
    /// Offset into the storage, in elements.
    pub offset: u64,
    /// Shape.
    pub shape: Vec<usize>,
    /// Stride, in elements.
    pub stride: Vec<usize>,
}

/// The pickle machine: candle's stack and memo semantics with a budget.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Obj>,
    stack_bytes: u64,
    memo: HashMap<u32, Obj>,
    memo_bytes: u64,
    copied: u64,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| format!("truncated: {n} more bytes needed"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    /// A `GLOBAL` argument line as candle reads it (up to a newline, last byte dropped).
    fn line(&mut self) -> String {
        let rest = &self.data[self.pos..];
        let (mut line, used) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (&rest[..rest.len().saturating_sub(1)], rest.len()),
        };
        self.pos += used;
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        String::from_utf8_lossy(line).into_owned()
    }

    fn check_live(&self) -> Result<(), String> {
        if self.stack_bytes.saturating_add(self.memo_bytes) > MAX_LIVE_BYTES {
            return Err(format!(
                "the objects would take more than {} MiB in memory",
                MAX_LIVE_BYTES >> 20
            ));
        }
        Ok(())
    }

    fn push(&mut self, node: Node) -> Result<(), String> {
        let o = make(node)?;
        self.push_obj(o)
    }

    fn push_obj(&mut self, o: Obj) -> Result<(), String> {
        self.stack_bytes += o.bytes;
        self.stack.push(o);
        self.check_live()
    }

    fn pop(&mut self) -> Result<Obj, String> {
        let o = self.stack.pop().ok_or("unexpected empty stack")?;
        self.stack_bytes -= o.bytes;
        Ok(o)
    }

    fn pop_to_mark(&mut self) -> Result<Vec<Obj>, String> {
        let at = self
            .stack
            .iter()
            .rposition(|o| matches!(o.node, Node::Mark))
            .ok_or("marker object not found")?;
        let objs = self.stack.split_off(at + 1);
        self.pop()?;
        self.stack_bytes -= objs.iter().map(|o| o.bytes).sum::<u64>();
        Ok(objs)
    }

    /// Pops the top object to edit it (a copy when the memo or the stack shares it: each such
    /// share was charged as a copy when it was made).
    fn pop_owned(&mut self) -> Result<Item, String> {
        Ok(Rc::unwrap_or_clone(self.pop()?))
    }

    /// Pushes `item` back after `added` became part of it.
    fn push_grown(&mut self, mut item: Item, added: &[Obj]) -> Result<(), String> {
        for o in added {
            item.bytes = item.bytes.saturating_add(o.bytes);
            item.depth = item.depth.max(o.depth + 1);
        }
        if item.depth > MAX_DEPTH {
            return Err(format!("objects nested deeper than {MAX_DEPTH} levels"));
        }
        self.push_obj(Rc::new(item))
    }

    fn copy(&mut self, o: &Obj) -> Result<(), String> {
        self.copied = self.copied.saturating_add(o.bytes);
        if self.copied > MAX_COPIED_BYTES {
            return Err(format!(
                "memo copies would exceed {} MiB",
                MAX_COPIED_BYTES >> 20
            ));
        }
        Ok(())
    }

    fn memo_get(&mut self, id: u32) -> Result<(), String> {
        let o = self
            .memo
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("missing object in memo {id}"))?;
        self.copy(&o)?;
        self.push_obj(o)
    }

    fn memo_put(&mut self, id: u32) -> Result<(), String> {
        let o = self.stack.last().cloned().ok_or("unexpected empty stack")?;
        self.copy(&o)?;
        self.memo_bytes += o.bytes;
        if let Some(old) = self.memo.insert(id, o) {
            self.memo_bytes -= old.bytes;
        }
        self.check_live()
    }

    /// Runs one opcode; `true` at `STOP`.
    fn step(&mut self) -> Result<bool, String> {
        let op = self.u8()?;
        match op {
            0x80 => {
                self.u8()?;
            }
            b'c' => {
                let module = self.line();
                let class = self.line();
                self.push(Node::Class(module, class))?
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Node::Int(v.into()))?
            }
            b'M' => {
                let b = self.take(2)?;
                self.push(Node::Int(u16::from_le_bytes([b[0], b[1]]).into()))?
            }
            b'J' => {
                let v = self.u32()? as i32;
                self.push(Node::Int(v))?
            }
            b'G' => {
                self.take(8)?;
                self.push(Node::Scalar)?
            }
            b'X' => {
                let len = self.u32()? as usize;
                if len > self.data.len() - self.pos {
                    return Err(format!("string of {len} bytes runs past the end"));
                }
                let s = std::str::from_utf8(self.take(len)?)
                    .map_err(|e| format!("string is not UTF-8: {e}"))?;
                self.push(Node::Unicode(s.to_string()))?
            }
            b'Q' => {
                let id = self.pop()?;
                self.push(Node::Persistent(id))?
            }
            b't' => {
                let objs = self.pop_to_mark()?;
                self.push(Node::Tuple(objs))?
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < n {
                    return Err("unexpected empty stack".into());
                }
                let mut objs = Vec::with_capacity(n);
                for _ in 0..n {
                    objs.push(self.pop()?);
                }
                objs.reverse();
                self.push(Node::Tuple(objs))?
            }
            0x88 | 0x89 | b'N' => self.push(Node::Scalar)?,
            b'a' => {
                let v = self.pop()?;
                let mut top = self.pop_owned()?;
                let Node::List(l) = &mut top.node else {
                    return Err("APPEND: expected a list".into());
                };
                l.push(v.clone());
                self.push_grown(top, &[v])?
            }
            b'e' => {
                let objs = self.pop_to_mark()?;
                let mut top = self.pop_owned()?;
                let Node::List(l) = &mut top.node else {
                    return Err("APPENDS: expected a list".into());
                };
                l.extend(objs.iter().cloned());
                self.push_grown(top, &objs)?
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                let mut top = self.pop_owned()?;
                let Node::Dict(d) = &mut top.node else {
                    return Err("SETITEM: expected a dict".into());
                };
                d.push((key.clone(), value.clone()));
                self.push_grown(top, &[key, value])?
            }
            b'u' => {
                let objs = self.pop_to_mark()?;
                let mut top = self.pop_owned()?;
                let Node::Dict(d) = &mut top.node else {
                    return Err("SETITEMS: expected a dict".into());
                };
                if objs.len() % 2 != 0 {
                    return Err("SETITEMS: odd number of objects".into());
                }
                // candle adds the pairs last first.
                for pair in objs.chunks_exact(2).rev() {
                    d.push((pair[0].clone(), pair[1].clone()));
                }
                self.push_grown(top, &objs)?
            }
            b'.' => return Ok(true),
            b'b' => {
                let args = self.pop()?;
                let obj = self.pop()?;
                if let (Node::Dict(_), Node::Dict(extra)) = (&obj.node, &args.node) {
                    let mut top = Rc::unwrap_or_clone(obj);
                    if let Node::Dict(d) = &mut top.node {
                        d.extend(extra.iter().cloned());
                    }
                    // The merged dict carries the entries, not a second dict object.
                    top.bytes = top.bytes.saturating_sub(NODE_BYTES);
                    self.push_grown(top, &[args])?
                } else {
                    self.push(Node::Build(obj, args))?
                }
            }
            // candle reads DICT as EMPTY_DICT.
            b'}' | b'd' => self.push(Node::Dict(Vec::new()))?,
            b'(' => self.push(Node::Mark)?,
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let node = match &callable.node {
                    Node::Class(m, c)
                        if m == "collections" && (c == "OrderedDict" || c == "defaultdict") =>
                    {
                        Node::Dict(Vec::new())
                    }
                    _ => Node::Reduce(callable, args),
                };
                self.push(node)?
            }
            b')' => self.push(Node::Tuple(Vec::new()))?,
            b']' => self.push(Node::List(Vec::new()))?,
            b'h' => {
                let id = self.u8()?;
                self.memo_get(id.into())?
            }
            b'j' => {
                let id = self.u32()?;
                self.memo_get(id)?
            }
            b'q' => {
                let id = self.u8()?;
                self.memo_put(id.into())?
            }
            b'r' => {
                let id = self.u32()?;
                self.memo_put(id)?
            }
            0x81 => {
                let args = self.pop()?;
                let class = self.pop()?;
                self.push(Node::Reduce(class, args))?
            }
            0x8a => {
                let n = self.u8()?;
                if n > 8 {
                    return Err(format!("LONG1 of {n} bytes (at most 8 are supported)"));
                }
                let mut v = 0i64;
                for (i, b) in self.take(n.into())?.iter().enumerate() {
                    v |= i64::from(*b) << (i * 8);
                }
                self.push(Node::Long(v))?
            }
            other => return Err(format!("unsupported opcode 0x{other:02x}")),
        }
        Ok(false)
    }
}

/// Walks `data` (a `data.pkl`) and returns the tensor records of its state dict, or what is
/// wrong with it (prefixed with the byte offset of the opcode at fault).
pub fn scan(data: &[u8]) -> Result<Vec<PickledTensor>, String> {
    if data.len() as u64 > MAX_PICKLE_BYTES {
        return Err(format!(
            "{} bytes, more than the {} MiB accepted",
            data.len(),
            MAX_PICKLE_BYTES >> 20
        ));
    }
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        stack_bytes: 0,
        memo: HashMap::new(),
        memo_bytes: 0,
        copied: 0,
    };
    loop {
        let at = m.pos;
        match m.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(format!("byte {at}: {e}")),
        }
    }
    let root = m.pop()?;
    state_dict_tensors(&root)
}

/// The tensors of the object candle takes as the state dict (see `read_pth_tensor_info`).
fn state_dict_tensors(root: &Obj) -> Result<Vec<PickledTensor>, String> {
    let root = match &root.node {
        Node::Build(callable, args) => match &callable.node {
            Node::Reduce(c, _) if is_class(c, "__torch__", "Module") => args,
            _ => return Ok(Vec::new()),
        },
        _ => root,
    };
    let Node::Dict(entries) = &root.node else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let Node::Unicode(name) = &key.node else {
            return Err(format!("state dict key {} is not a string", kind(key)));
        };
        match &value.node {
            Node::Reduce(callable, args) => out.push(
                tensor_record(name, callable, args).map_err(|e| format!("tensor {name}: {e}"))?,
            ),
            // The module metadata `torch.save` stores next to the tensors.
            _ if name == "_metadata" => {}
            _ => return Err(format!("entry {name} is a {}, not a tensor", kind(value))),
        }
    }
    Ok(out)
}

fn is_class(o: &Obj, module: &str, class: &str) -> bool {
    matches!(&o.node, Node::Class(m, c) if m == module && c == class)
}

fn kind(o: &Obj) -> String {
    match &o.node {
        Node::Class(m, c) => format!("global {m}.{c}"),
        Node::Int(_) | Node::Long(_) => "number".into(),
        Node::Unicode(_) => "string".into(),
        Node::Scalar => "scalar".into(),
        Node::Tuple(_) => "tuple".into(),
        Node::List(_) => "list".into(),
        Node::Mark => "mark".into(),
        Node::Dict(_) => "dict".into(),
        Node::Reduce(c, _) => format!("call of {}", kind(c)),
        Node::Build(..) => "built object".into(),
        Node::Persistent(_) => "persistent id".into(),
    }
}

fn tuple<'o>(o: &'o Obj, what: &str, min_len: usize) -> Result<&'o [Obj], String> {
    match &o.node {
        Node::Tuple(t) if t.len() >= min_len => Ok(t),
        Node::Tuple(t) => Err(format!("{what} has {} items, {min_len} expected", t.len())),
        _ => Err(format!("{what} is a {}, not a tuple", kind(o))),
    }
}

/// Resolves a state-dict value the way candle's `into_tensor_info` does, refusing every case
/// where candle would panic, fail or skip the tensor.
fn tensor_record(name: &str, callable: &Obj, args: &Obj) -> Result<PickledTensor, String> {
    let (callable, args) = if is_class(callable, "torch._tensor", "_rebuild_from_type_v2") {
        let t = tuple(args, "_rebuild_from_type_v2 arguments", 3)?;
        (&t[0], &t[2])
    } else if is_class(callable, "torch._utils", "_rebuild_parameter") {
        let t = tuple(args, "_rebuild_parameter arguments", 1)?;
        match &t[0].node {
            Node::Reduce(c, a) => (c, a),
            _ => return Err(format!("parameter data is a {}", kind(&t[0]))),
        }
    } else {
        (callable, args)
    };
    if !is_class(callable, "torch._utils", "_rebuild_tensor_v2") {
        return Err(format!(
            "unsupported tensor constructor ({})",
            kind(callable)
        ));
    }
    let a = tuple(args, "_rebuild_tensor_v2 arguments", 4)?;
    let dims = |o: &Obj, what: &str| -> Result<Vec<usize>, String> {
        tuple(o, what, 0)?
            .iter()
            .map(|d| match d.node {
                Node::Int(v) if v >= 0 => Ok(v as usize),
                _ => Err(format!(
                    "{what} holds a {} (non-negative ints expected)",
                    kind(d)
                )),
            })
            .collect()
    };
    let stride = dims(&a[3], "stride")?;
    let shape = dims(&a[2], "size")?;
    let offset = unsigned(&a[1], "storage offset")?;
    let Node::Persistent(pid) = &a[0].node else {
        return Err(format!("storage is a {}, not a persistent id", kind(&a[0])));
    };
    let s = tuple(pid, "storage id", 5)?;
    let storage_len = unsigned(&s[4], "storage size")?;
    let Node::Unicode(storage) = &s[2].node else {
        return Err(format!("storage key is a {}", kind(&s[2])));
    };
    let Node::Class(_, class) = &s[1].node else {
        return Err(format!("storage type is a {}", kind(&s[1])));
    };
    let dtype = match class.as_str() {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "ByteStorage" => DType::U8,
        "LongStorage" => DType::I64,
        other => return Err(format!("unsupported storage type {other}")),
    };
    Ok(PickledTensor {
        name: name.to_string(),
        storage: storage.clone(),
        dtype,
        storage_len,
        offset,
        shape,
        stride,
    })
}

/// An int or long that must be non-negative (candle casts it to `usize`).
fn unsigned(o: &Obj, what: &str) -> Result<u64, String> {
    match o.node {
        Node::Int(v) if v >= 0 => Ok(v as u64),
        Node::Long(v) if v >= 0 => Ok(v as u64),
        Node::Int(v) => Err(format!("{what} {v} is negative")),
        Node::Long(v) => Err(format!("{what} {v} is negative")),
        _ => Err(format!("{what} is a {}, not an int", kind(o))),
    }
}
