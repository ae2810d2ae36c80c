//! IDX files (MNIST, Fashion-MNIST), raw or gzipped, and [`IdxDataset`].
//!
//! The format (LeCun's MNIST page): the magic `00 00 TT RR`, where `TT` is
//! the element type (`08` = unsigned byte, the only one image sets use) and
//! `RR` the number of dimensions; then each dimension as a big-endian `u32`;
//! then the elements, row-major. Images are rank 3 `[N, H, W]`, labels rank 1
//! `[N]`.
//!
//! A file is gzipped when it starts with gzip's magic `1f 8b`, whatever its
//! name. Reading streams through the decompressor and stops after the bytes
//! the header promises, so a hostile header cannot make us allocate more than
//! the file delivers; then one more read checks that nothing follows (and,
//! for gzip, runs the CRC check at the end of the stream). Short files,
//! trailing bytes, bad gzip data and wrong ranks are errors naming the file.
//!
//! The standard names are found by [`find_idx_files`]: `train-images-idx3-ubyte`
//! and `train-labels-idx1-ubyte` (and `t10k-…` for [`Split::Val`]), with or
//! without `.gz`, also in the `train-images.idx3-ubyte` spelling. Debian's
//! `dataset-fashion-mnist` installs the four gzipped files in
//! [`FASHION_MNIST_DIR`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use image::GrayImage;

use crate::{DataError, Dataset, RawImage, Split, Transform};

/// Where Debian's `dataset-fashion-mnist` package installs the data.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The element types of the IDX format (the third byte of the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdxElement {
    U8,
    I8,
    I16,
    I32,
    F32,
    F64,
}

impl IdxElement {
    /// The type of a header's type byte, if it names one.
    pub fn from_code(code: u8) -> Option<IdxElement> {
        Some(match code {
            0x08 => IdxElement::U8,
            0x09 => IdxElement::I8,
            0x0b => IdxElement::I16,
            0x0c => IdxElement::I32,
            0x0d => IdxElement::F32,
            0x0e => IdxElement::F64,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        match self {
            IdxElement::U8 => 0x08,
            IdxElement::I8 => 0x09,
            IdxElement::I16 => 0x0b,
            IdxElement::I32 => 0x0c,
            IdxElement::F32 => 0x0d,
            IdxElement::F64 => 0x0e,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            IdxElement::U8 | IdxElement::I8 => 1,
            IdxElement::I16 => 2,
            IdxElement::I32 | IdxElement::F32 => 4,
            IdxElement::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            IdxElement::U8 => "unsigned bytes",
            IdxElement::I8 => "signed bytes",
            IdxElement::I16 => "16-bit integers",
            IdxElement::I32 => "32-bit integers",
            IdxElement::F32 => "32-bit floats",
            IdxElement::F64 => "64-bit floats",
        }
    }
}

/// The contents of an IDX file.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub element: IdxElement,
    /// Row-major, `product(dims)` elements of `element.size()` bytes each,
    /// big-endian as in the file (for `U8`: the values themselves).
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Element `i` as an `f64` (exact for every IDX type).
    fn value(&self, i: usize) -> f64 {
        let size = self.element.size();
        let b = &self.data[i * size..(i + 1) * size];
        match self.element {
            IdxElement::U8 => f64::from(b[0]),
            IdxElement::I8 => f64::from(b[0] as i8),
            IdxElement::I16 => f64::from(i16::from_be_bytes([b[0], b[1]])),
            IdxElement::I32 => f64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            IdxElement::F32 => f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            IdxElement::F64 => f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        }
    }

    /// Every element as an `f64`, in order.
    pub fn to_f64(&self) -> Vec<f64> {
        (0..self.data.len() / self.element.size())
            .map(|i| self.value(i))
            .collect()
    }

    /// Every element as an `i64`, for the integer types; `None` for floats.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match self.element {
            IdxElement::F32 | IdxElement::F64 => None,
            // Exact: every integer type fits an f64's mantissa.
            _ => Some(self.to_f64().into_iter().map(|v| v as i64).collect()),
        }
    }
}

/// Reads an IDX file, raw or gzipped.
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray, DataError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    parse_idx(BufReader::new(file), path)
}

/// Parses IDX data (raw or gzipped) from `reader`; `path` names it in errors.
pub fn parse_idx(mut reader: impl BufRead, path: &Path) -> Result<IdxArray, DataError> {
    let head = reader.fill_buf().map_err(|e| DataError::io(path, e))?;
    if head.starts_with(&GZIP_MAGIC) {
        parse_raw(GzDecoder::new(reader), path, true)
    } else {
        parse_raw(reader, path, false)
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn parse_raw(mut reader: impl Read, path: &Path, gzip: bool) -> Result<IdxArray, DataError> {
    // In a gzip stream every read error is the compressed data's fault.
    let err = |e: std::io::Error| {
        if gzip {
            DataError::Gzip {
                path: path.to_path_buf(),
                source: e,
            }
        } else {
            DataError::io(path, e)
        }
    };
    let truncated = |what: String, expected: usize, found: usize| DataError::IdxTruncated {
        path: path.to_path_buf(),
        what,
        expected,
        found,
    };

    let mut magic = [0u8; 4];
    let n = read_up_to(&mut reader, &mut magic).map_err(err)?;
    if n < 4 || magic[0] != 0 || magic[1] != 0 {
        return Err(DataError::IdxMagic {
            path: path.to_path_buf(),
            found: magic[..n].to_vec(),
        });
    }
    let element = IdxElement::from_code(magic[2]).ok_or_else(|| DataError::IdxType {
        path: path.to_path_buf(),
        code: magic[2],
    })?;
    let rank = usize::from(magic[3]);
    let mut header = vec![0u8; 4 * rank];
    let n = read_up_to(&mut reader, &mut header).map_err(err)?;
    if n < header.len() {
        return Err(truncated(
            format!("the header of {rank} dimensions"),
            4 + header.len(),
            4 + n,
        ));
    }
    let dims: Vec<usize> = header
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let count = match alexc_tensor::element_count(&dims)
        .ok()
        .and_then(|n| n.checked_mul(element.size()))
    {
        Some(count) if rank > 0 => count,
        _ => {
            return Err(DataError::IdxDims {
                path: path.to_path_buf(),
                dims,
            })
        }
    };

    // `take` + `read_to_end` grows the buffer as bytes arrive, so a lying
    // header costs at most what the file really holds.
    let mut data = Vec::with_capacity(count.min(1 << 24));
    (&mut reader)
        .take(count as u64)
        .read_to_end(&mut data)
        .map_err(err)?;
    if data.len() < count {
        return Err(truncated(
            format!("the data of dimensions {dims:?}"),
            4 + header.len() + count,
            4 + header.len() + data.len(),
        ));
    }
    let mut extra = [0u8; 1];
    if read_up_to(&mut reader, &mut extra).map_err(err)? > 0 {
        return Err(DataError::IdxTrailing {
            path: path.to_path_buf(),
            dims,
            expected: count,
        });
    }
    Ok(IdxArray {
        dims,
        element,
        data,
    })
}

/// Writes an IDX file of unsigned bytes, gzipped if `gzip` (for tests and
/// for converting data sets).
pub fn write_idx(
    path: impl AsRef<Path>,
    dims: &[usize],
    data: &[u8],
    gzip: bool,
) -> Result<(), DataError> {
    let path = path.as_ref();
    let rank = u8::try_from(dims.len()).ok();
    let dims32: Option<Vec<u32>> = dims.iter().map(|&d| u32::try_from(d).ok()).collect();
    let count = alexc_tensor::element_count(dims).ok();
    let (Some(rank), Some(dims32), Some(count)) = (rank, dims32, count) else {
        return Err(DataError::IdxDims {
            path: path.to_path_buf(),
            dims: dims.to_vec(),
        });
    };
    if count != data.len() {
        return Err(DataError::IdxTruncated {
            path: path.to_path_buf(),
            what: format!("writing dimensions {dims:?}"),
            expected: count,
            found: data.len(),
        });
    }
    let mut bytes = vec![0, 0, IdxElement::U8.code(), rank];
    for d in dims32 {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    let io = |e| DataError::io(path, e);
    let mut file = File::create(path).map_err(io)?;
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        enc.write_all(&bytes).map_err(io)?;
        enc.finish().map_err(io)?;
    } else {
        file.write_all(&bytes).map_err(io)?;
    }
    Ok(())
}

/// The images and labels files of `split` in `dir`, by their standard names.
pub fn find_idx_files(
    dir: impl AsRef<Path>,
    split: Split,
) -> Result<(PathBuf, PathBuf), DataError> {
    let dir = dir.as_ref();
    let prefix = match split {
        Split::Train => "train",
        Split::Val => "t10k",
    };
    let find = |kind: &str, rank: u8| {
        let name = format!("{prefix}-{kind}-idx{rank}-ubyte");
        let alt = format!("{prefix}-{kind}.idx{rank}-ubyte");
        let candidates = [
            name.clone(),
            format!("{name}.gz"),
            alt.clone(),
            format!("{alt}.gz"),
        ];
        candidates
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .ok_or(DataError::MissingFile {
                dir: dir.to_path_buf(),
                name,
                alt,
            })
    };
    Ok((find("images", 3)?, find("labels", 1)?))
}

/// An MNIST-style data set: `[N, H, W]` grayscale images and `[N]` labels.
#[derive(Debug, Clone)]
pub struct IdxDataset {
    images: Vec<u8>,
    height: usize,
    width: usize,
    labels: Vec<i64>,
    classes: Vec<String>,
    images_path: PathBuf,
    transform: Transform,
}

impl IdxDataset {
    /// Reads an images file and a labels file. Classes are named `0`, `1`,
    /// … up to the largest label, unless [`IdxDataset::with_class_names`].
    pub fn open(
        images: impl AsRef<Path>,
        labels: impl AsRef<Path>,
        transform: Transform,
    ) -> Result<Self, DataError> {
        transform.validate()?;
        let (images_path, labels_path) = (images.as_ref(), labels.as_ref());
        let imgs = read_idx(images_path)?;
        let labs = read_idx(labels_path)?;
        let rank = |path: &Path, what, expected, found| DataError::IdxRank {
            path: path.to_path_buf(),
            what,
            expected,
            found,
        };
        let &[n, height, width] = imgs.dims.as_slice() else {
            return Err(rank(
                images_path,
                "images: count, height, width",
                3,
                imgs.dims.len(),
            ));
        };
        let &[n_labels] = labs.dims.as_slice() else {
            return Err(rank(labels_path, "labels: count", 1, labs.dims.len()));
        };
        if n != n_labels {
            return Err(DataError::CountMismatch {
                images_path: images_path.to_path_buf(),
                labels_path: labels_path.to_path_buf(),
                images: n,
                labels: n_labels,
            });
        }
        if n == 0 || height == 0 || width == 0 {
            return Err(DataError::Empty);
        }
        // Pixels are 8-bit (RawImage): other element types have no one
        // right mapping to pixel values, so they are refused by name.
        if imgs.element != IdxElement::U8 {
            return Err(DataError::IdxElementKind {
                path: images_path.to_path_buf(),
                what: "images",
                expected: "unsigned bytes (IDX type 0x08)",
                found: imgs.element.name(),
            });
        }
        let labels = labs.to_i64().ok_or(DataError::IdxElementKind {
            path: labels_path.to_path_buf(),
            what: "labels",
            expected: "integers (IDX types 0x08, 0x09, 0x0b or 0x0c)",
            found: labs.element.name(),
        })?;
        // A class per label up to the largest: bound it so a corrupt label
        // cannot make millions of class names.
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| !(0..=1 << 20).contains(&l))
        {
            return Err(DataError::IdxLabel {
                path: labels_path.to_path_buf(),
                index,
                label,
            });
        }
        let max_label = labels.iter().copied().max().unwrap_or(0);
        Ok(IdxDataset {
            images: imgs.data,
            height,
            width,
            labels,
            classes: (0..=max_label).map(|k| k.to_string()).collect(),
            images_path: images_path.to_path_buf(),
            transform,
        })
    }

    /// The `split` of the IDX files in `dir` ([`find_idx_files`]).
    pub fn open_split(
        dir: impl AsRef<Path>,
        split: Split,
        transform: Transform,
    ) -> Result<Self, DataError> {
        let (images, labels) = find_idx_files(dir, split)?;
        Self::open(images, labels, transform)
    }

    /// Fashion-MNIST from [`FASHION_MNIST_DIR`], with its class names.
    pub fn fashion_mnist(split: Split, transform: Transform) -> Result<Self, DataError> {
        Self::open_split(FASHION_MNIST_DIR, split, transform)?.with_class_names(
            FASHION_MNIST_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )
    }

    /// Names the classes; there must be a name for every label.
    pub fn with_class_names(mut self, names: Vec<String>) -> Result<Self, DataError> {
        let max_label = self.classes.len() - 1;
        if names.len() <= max_label {
            return Err(DataError::ClassNames {
                path: self.images_path.clone(),
                max_label,
                found: names.len(),
            });
        }
        self.classes = names;
        Ok(self)
    }

    /// The same images under another transform.
    pub fn with_transform(mut self, transform: Transform) -> Result<Self, DataError> {
        transform.validate()?;
        self.transform = transform;
        Ok(self)
    }

    /// `(height, width)` of the stored images.
    pub fn image_size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// The bytes of image `index`, row-major.
    pub fn pixels(&self, index: usize) -> Option<&[u8]> {
        let plane = self.height * self.width;
        self.images.get(index * plane..(index + 1) * plane)
    }
}

impl Dataset for IdxDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn transform(&self) -> &Transform {
        &self.transform
    }

    fn load(&self, index: usize) -> Result<(RawImage, i64), DataError> {
        let out_of_range = || DataError::IndexOutOfRange {
            index,
            len: self.len(),
        };
        let pixels = self.pixels(index).ok_or_else(out_of_range)?;
        let label = self.labels.get(index).ok_or_else(out_of_range)?;
        // Both sides came from u32 header fields.
        let image = GrayImage::from_raw(self.width as u32, self.height as u32, pixels.to_vec())
            .ok_or_else(out_of_range)?;
        Ok((RawImage::Gray(image), *label))
    }

    fn name_of(&self, index: usize) -> String {
        format!("{}[{index}]", self.images_path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(rank: u8, dims: &[u32]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, rank];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    fn parse(bytes: &[u8]) -> Result<IdxArray, DataError> {
        parse_idx(bytes, Path::new("test.idx"))
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).expect("gzip");
        enc.finish().expect("gzip")
    }

    #[test]
    fn parses_raw_and_gzipped() {
        let mut bytes = header(3, &[2, 2, 3]);
        bytes.extend(0..12u8);
        let want = IdxArray {
            dims: vec![2, 2, 3],
            element: IdxElement::U8,
            data: (0..12).collect(),
        };
        assert_eq!(parse(&bytes).expect("raw"), want);
        assert_eq!(parse(&gzip(&bytes)).expect("gz"), want);
    }

    #[test]
    fn rejects_malformed_headers_and_lengths() {
        let mut good = header(1, &[5]);
        good.extend([1, 2, 3, 4, 5]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "not an IDX file"),
            (vec![1, 2, 8, 1, 0, 0, 0, 1, 0], "not an IDX file"),
            (vec![0, 0, 0x0a, 1, 0, 0, 0, 1, 0, 0, 0, 0], "0x0a"),
            (header(3, &[2, 2]), "header of 3 dimensions"),
            (good[..good.len() - 2].to_vec(), "truncated"),
            ([&good[..], &[9]].concat(), "more follow"),
            (header(0, &[]), "empty or too large"),
            (header(3, &[u32::MAX, u32::MAX, 2]), "empty or too large"),
        ];
        for (bytes, msg) in cases {
            for data in [bytes.clone(), gzip(&bytes)] {
                let err = parse(&data).expect_err(msg).to_string();
                assert!(
                    err.contains(msg) && err.contains("test.idx"),
                    "{err} (want {msg})"
                );
            }
        }
    }

    #[test]
    fn rejects_corrupt_and_truncated_gzip() {
        let mut bytes = header(3, &[4, 16, 16]);
        bytes.extend((0..1024u32).map(|i| (i * 7 % 251) as u8));
        let gz = gzip(&bytes);
        // Cut in the middle of the deflate stream.
        let err = parse(&gz[..gz.len() / 2])
            .expect_err("truncated")
            .to_string();
        assert!(
            err.contains("test.idx") && (err.contains("gzip") || err.contains("truncated")),
            "{err}"
        );
        // Cut the CRC off the end.
        let err = parse(&gz[..gz.len() - 4]).expect_err("no crc").to_string();
        assert!(err.contains("gzip"), "{err}");
        // Flip bits inside the compressed data: a deflate or CRC error.
        let mut bad = gz.clone();
        for b in &mut bad[20..40] {
            *b ^= 0x5a;
        }
        let err = parse(&bad).expect_err("corrupt").to_string();
        assert!(err.contains("test.idx"), "{err}");
    }

    /// A header with any type byte.
    fn typed_header(code: u8, dims: &[u32]) -> Vec<u8> {
        let mut b = header(dims.len() as u8, dims);
        b[2] = code;
        b
    }

    #[test]
    fn parses_every_element_type_big_endian() {
        let cases: Vec<(u8, Vec<u8>, Vec<f64>)> = vec![
            (0x09, vec![0xff, 0x05], vec![-1.0, 5.0]),
            (
                0x0b,
                [-300i16, 7].iter().flat_map(|v| v.to_be_bytes()).collect(),
                vec![-300.0, 7.0],
            ),
            (
                0x0c,
                [70_000i32, -2]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect(),
                vec![70_000.0, -2.0],
            ),
            (
                0x0d,
                [0.5f32, -1.25]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect(),
                vec![0.5, -1.25],
            ),
            (
                0x0e,
                [1e-300f64, 3.0]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect(),
                vec![1e-300, 3.0],
            ),
        ];
        for (code, payload, want) in cases {
            let mut bytes = typed_header(code, &[2]);
            bytes.extend(&payload);
            let a = parse(&bytes).unwrap_or_else(|e| panic!("type 0x{code:02x}: {e}"));
            assert_eq!(a.element.code(), code);
            assert_eq!(a.to_f64(), want, "type 0x{code:02x}");
            let ints = a.to_i64();
            assert_eq!(ints.is_some(), code < 0x0d, "type 0x{code:02x}");
            if let Some(ints) = ints {
                assert_eq!(ints, want.iter().map(|&v| v as i64).collect::<Vec<_>>());
            }
            // One element short: the size counts bytes per element.
            let short = parse(&bytes[..bytes.len() - 1])
                .expect_err("truncated")
                .to_string();
            assert!(short.contains("truncated"), "{short}");
        }
    }

    #[test]
    fn datasets_take_integer_labels_of_any_width_and_refuse_float_images() {
        let dir = std::env::temp_dir().join(format!("alexc-idx-types-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let images = dir.join("images.idx");
        write_idx(&images, &[2, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7], false).expect("images");
        let write = |name: &str, code: u8, dims: &[u32], payload: Vec<u8>| {
            let mut bytes = typed_header(code, dims);
            bytes.extend(payload);
            let path = dir.join(name);
            std::fs::write(&path, bytes).expect("write");
            path
        };
        let t = Transform::eval(1, 2, 2).with_resize(crate::Resize::None);
        let i32_labels = write(
            "l32.idx",
            0x0c,
            &[2],
            [3i32, 300].iter().flat_map(|v| v.to_be_bytes()).collect(),
        );
        let ds = IdxDataset::open(&images, &i32_labels, t.clone()).expect("i32 labels");
        assert_eq!(ds.labels(), &[3, 300]);
        assert_eq!(ds.classes().len(), 301);

        let negative = write("neg.idx", 0x09, &[2], vec![1, 0xff]);
        let err = IdxDataset::open(&images, &negative, t.clone())
            .expect_err("negative")
            .to_string();
        assert!(err.contains("label -1 of sample 1"), "{err}");

        let float_labels = write(
            "lf.idx",
            0x0d,
            &[2],
            [1f32, 2.0].iter().flat_map(|v| v.to_be_bytes()).collect(),
        );
        let err = IdxDataset::open(&images, &float_labels, t.clone())
            .expect_err("float labels")
            .to_string();
        assert!(
            err.contains("labels must be integers") && err.contains("32-bit floats"),
            "{err}"
        );

        let float_images = write("if.idx", 0x0d, &[2, 2, 2], vec![0; 32]);
        let err = IdxDataset::open(&float_images, &i32_labels, t)
            .expect_err("float images")
            .to_string();
        assert!(err.contains("images must be unsigned bytes"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
