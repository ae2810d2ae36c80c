//! ImageNet-style folders: `train/<class>/*.{jpg,jpeg,png}`, `val/<class>/…`.
//!
//! Classes are the sorted names of the class folders (hidden ones, starting
//! with `.`, are ignored); the images of a class are its files with a JPEG or
//! PNG extension (any case), sorted by name, so image `i` is the same file on
//! every machine. Files are only listed here; they are decoded (with the
//! `image` crate, format guessed from the contents) when the loader asks.
//!
//! The validation folder is labelled with the *training* classes
//! ([`ImageFolder::open_with_classes`]): a class folder there that training
//! does not have is an error, since its label would mean nothing to the
//! model; a training class without validation images is fine.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{DataError, Dataset, RawImage, Split, Transform};

const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Whether `path` has an extension this loader decodes.
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Decodes an image file (JPEG or PNG, recognized by its contents).
pub fn decode_image(path: &Path) -> Result<RawImage, DataError> {
    let decode_err = |source| DataError::Decode {
        path: path.to_path_buf(),
        source,
    };
    let image = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?
        .decode()
        .map_err(decode_err)?;
    Ok(RawImage::from_dynamic(image))
}

/// The sorted names of the class folders in `root`.
pub fn class_folders(root: &Path) -> Result<Vec<String>, DataError> {
    let io = |e| DataError::io(root, e);
    let mut classes = Vec::new();
    for entry in fs::read_dir(root).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            classes.push(name);
        }
    }
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::NoClasses {
            root: root.to_path_buf(),
        });
    }
    Ok(classes)
}

/// The image files directly inside `dir`, sorted.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |e| DataError::io(dir, e);
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if is_image_file(&path) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(DataError::EmptyClass {
            path: dir.to_path_buf(),
        });
    }
    Ok(files)
}

/// A folder of class folders of images.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    items: Vec<(PathBuf, usize)>,
    transform: Transform,
}

impl ImageFolder {
    /// Lists `root/<class>/*`; the classes are the folders found.
    pub fn open(root: impl AsRef<Path>, transform: Transform) -> Result<Self, DataError> {
        let root = root.as_ref();
        let classes = class_folders(root)?;
        Self::open_with_classes(root, &classes, transform)
    }

    /// Lists `root/<class>/*`, labelling by the position in `classes`.
    pub fn open_with_classes(
        root: impl AsRef<Path>,
        classes: &[String],
        transform: Transform,
    ) -> Result<Self, DataError> {
        transform.validate()?;
        let root = root.as_ref();
        let mut items = Vec::new();
        for name in class_folders(root)? {
            let label =
                classes
                    .iter()
                    .position(|c| *c == name)
                    .ok_or_else(|| DataError::UnknownClass {
                        root: root.to_path_buf(),
                        class: name.clone(),
                    })?;
            items.extend(
                image_files(&root.join(&name))?
                    .into_iter()
                    .map(|p| (p, label)),
            );
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            classes: classes.to_vec(),
            items,
            transform,
        })
    }

    /// `base/train` or `base/val`; both are labelled by `base/train`'s classes.
    pub fn open_split(
        base: impl AsRef<Path>,
        split: Split,
        transform: Transform,
    ) -> Result<Self, DataError> {
        let base = base.as_ref();
        let classes = class_folders(&base.join("train"))?;
        Self::open_with_classes(base.join(split.to_string()), &classes, transform)
    }

    /// The same files under another transform.
    pub fn with_transform(mut self, transform: Transform) -> Result<Self, DataError> {
        transform.validate()?;
        self.transform = transform;
        Ok(self)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every image file with its label, in index order.
    pub fn items(&self) -> &[(PathBuf, usize)] {
        &self.items
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn transform(&self) -> &Transform {
        &self.transform
    }

    fn load(&self, index: usize) -> Result<(RawImage, i64), DataError> {
        let (path, label) = self.items.get(index).ok_or(DataError::IndexOutOfRange {
            index,
            len: self.items.len(),
        })?;
        Ok((decode_image(path)?, *label as i64))
    }

    fn name_of(&self, index: usize) -> String {
        self.items.get(index).map_or_else(
            || format!("{}[{index}]", self.root.display()),
            |(p, _)| p.display().to_string(),
        )
    }
}
