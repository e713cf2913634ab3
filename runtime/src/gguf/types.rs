//! The value types of a GGUF file: metadata values, ggml tensor types and tensor descriptions.

/// One metadata value. GGUF arrays are homogeneous; nested arrays are arrays of `Array`s.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// Any integer type holding a non-negative value (converters are inconsistent about whether
    /// e.g. `context_length` is u32, i32 or u64).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any numeric type (64-bit integers above 2^53 lose precision, as in Python).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v as f64),
            MetaValue::I64(v) => Some(v as f64),
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Short description for error messages: the type, and the value for numbers.
    pub(crate) fn describe(&self) -> String {
        match self {
            MetaValue::U8(v) => format!("u8 {v}"),
            MetaValue::I8(v) => format!("i8 {v}"),
            MetaValue::U16(v) => format!("u16 {v}"),
            MetaValue::I16(v) => format!("i16 {v}"),
            MetaValue::U32(v) => format!("u32 {v}"),
            MetaValue::I32(v) => format!("i32 {v}"),
            MetaValue::U64(v) => format!("u64 {v}"),
            MetaValue::I64(v) => format!("i64 {v}"),
            MetaValue::F32(v) => format!("f32 {v}"),
            MetaValue::F64(v) => format!("f64 {v}"),
            MetaValue::Bool(v) => format!("bool {v}"),
            MetaValue::String(_) => "a string".to_string(),
            MetaValue::Array(items) => format!("an array of {} values", items.len()),
        }
    }
}

/// Declares `GgmlType` from one table so ids, names and block geometry cannot drift apart.
/// Geometry is ggml's `type_traits` (`GGML_QUANT_SIZES` in the Python package).
macro_rules! ggml_types {
    ($($variant:ident = $id:literal, $block:literal, $size:expr;)*) => {
        /// A ggml tensor storage type. Only some of them can be dequantized (see `dequant`);
        /// the rest are known so that files using them still open and report a clear error.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum GgmlType { $($variant),* }

        impl GgmlType {
            /// The type for a GGUF type id; `None` for ids ggml never assigned or has retired.
            pub fn from_u32(v: u32) -> Option<Self> {
                match v { $($id => Some(GgmlType::$variant),)* _ => None }
            }

            /// The id stored in GGUF tensor infos.
            pub fn id(self) -> u32 {
                match self { $(GgmlType::$variant => $id),* }
            }

            /// Elements per block (1 for plain types).
            pub fn block_size(self) -> usize {
                match self { $(GgmlType::$variant => $block),* }
            }

            /// Bytes per block.
            pub fn type_size(self) -> usize {
                match self { $(GgmlType::$variant => $size),* }
            }

            /// ggml's name for the type, e.g. "Q4_K".
            pub fn name(self) -> &'static str {
                match self { $(GgmlType::$variant => stringify!($variant)),* }
            }
        }
    };
}

// QK_K = 256 super-blocks; sizes written as in ggml-common.h.
ggml_types! {
    F32 = 0, 1, 4;
    F16 = 1, 1, 2;
    Q4_0 = 2, 32, 2 + 16;
    Q4_1 = 3, 32, 2 + 2 + 16;
    Q5_0 = 6, 32, 2 + 4 + 16;
    Q5_1 = 7, 32, 2 + 2 + 4 + 16;
    Q8_0 = 8, 32, 2 + 32;
    Q8_1 = 9, 32, 4 + 4 + 32;
    Q2_K = 10, 256, 2 + 2 + 256 / 16 + 256 / 4;
    Q3_K = 11, 256, 2 + 256 / 4 + 256 / 8 + 12;
    Q4_K = 12, 256, 2 + 2 + 256 / 2 + 12;
    Q5_K = 13, 256, 2 + 2 + 256 / 2 + 256 / 8 + 12;
    Q6_K = 14, 256, 2 + 256 / 2 + 256 / 4 + 256 / 16;
    Q8_K = 15, 256, 4 + 256 + 256 / 8;
    IQ2_XXS = 16, 256, 2 + 256 / 4;
    IQ2_XS = 17, 256, 2 + 256 / 4 + 256 / 32;
    IQ3_XXS = 18, 256, 2 + 256 / 4 + 256 / 8;
    IQ1_S = 19, 256, 2 + 256 / 8 + 256 / 16;
    IQ4_NL = 20, 32, 2 + 16;
    IQ3_S = 21, 256, 2 + 256 / 4 + 256 / 8 + 256 / 32 + 4;
    IQ2_S = 22, 256, 2 + 256 / 4 + 256 / 16;
    IQ4_XS = 23, 256, 2 + 2 + 256 / 2 + 256 / 64;
    I8 = 24, 1, 1;
    I16 = 25, 1, 2;
    I32 = 26, 1, 4;
    I64 = 27, 1, 8;
    F64 = 28, 1, 8;
    IQ1_M = 29, 256, 256 / 8 + 256 / 16 + 256 / 32;
    BF16 = 30, 1, 2;
    TQ1_0 = 34, 256, 2 + 4 * 13;
    TQ2_0 = 35, 256, 2 + 64;
    MXFP4 = 39, 32, 1 + 16;
    NVFP4 = 40, 64, 4 + 32;
    Q1_0 = 41, 128, 2 + 16;
}

/// One tensor's entry in the GGUF header. For infos returned by `GgufFile`, the element count,
/// byte size and data range were validated at open time.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// As stored in GGUF: `dims[0]` is the fastest-varying (row length).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Product of the dims (saturating, so hand-built infos cannot overflow-panic).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// The PyTorch shape: GGUF dims reversed, so `[rows, row_length]` for a matrix.
    pub fn shape(&self) -> Vec<i64> {
        self.dims
            .iter()
            .rev()
            .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
            .collect()
    }

    /// Bytes of quantized data.
    pub fn byte_size(&self) -> u64 {
        let blocks = self.n_elements() / self.ggml_type.block_size() as u64;
        blocks.saturating_mul(self.ggml_type.type_size() as u64)
    }
}
