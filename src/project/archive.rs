//! Project archives (zip, tar, tar.gz) read into files within limits: the number of entries,
//! the size of each file and the total decompressed size, counted while reading (a zip bomb
//! stops at the limit, whatever its headers claim). Links and paths leaving the project are
//! refused; folders and system clutter (`__MACOSX/`, `.git/`, `.DS_Store`) are skipped.
use std::cell::Cell;
use std::io::{Cursor, Read};
use std::rc::Rc;

use super::{IncomingFile, ProjectError, normalise_path};
use crate::config::ProjectSettings;

/// Headers and padding a tar stream may add around its files, beyond their content.
const TAR_OVERHEAD_PER_ENTRY: u64 = 3 * 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Zip,
    Tar,
    TarGz,
}

/// What kind of archive `bytes` hold, from their first bytes.
pub fn kind_of(bytes: &[u8]) -> Option<ArchiveKind> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        Some(ArchiveKind::Zip)
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        Some(ArchiveKind::TarGz)
    } else if bytes.len() >= 512 && &bytes[257..262] == b"ustar" {
        Some(ArchiveKind::Tar)
    } else {
        None
    }
}

/// Every file of the archive, or the first reason to refuse it.
pub fn read_archive(
    bytes: &[u8],
    settings: &ProjectSettings,
) -> Result<Vec<IncomingFile>, ProjectError> {
    if bytes.len() as u64 > settings.max_archive_bytes {
        return Err(ProjectError::ArchiveTooLarge {
            bytes: bytes.len() as u64,
            limit: settings.max_archive_bytes,
        });
    }
    let files = match kind_of(bytes).ok_or(ProjectError::UnknownArchive)? {
        ArchiveKind::Zip => read_zip(bytes, settings)?,
        ArchiveKind::Tar => read_tar(Cursor::new(bytes), settings)?,
        ArchiveKind::TarGz => read_tar(flate2::read::GzDecoder::new(Cursor::new(bytes)), settings)?,
    };
    if files.is_empty() {
        return Err(ProjectError::NoFiles("the archive holds no file"));
    }
    Ok(files)
}

/// Clutter that archivers and editors add; never part of a project.
fn is_clutter(path: &str) -> bool {
    path.split('/')
        .any(|part| matches!(part, "__MACOSX" | ".git" | ".DS_Store"))
}

/// Totals of one archive as it is read.
struct Tally<'a> {
    settings: &'a ProjectSettings,
    total: u64,
}

impl Tally<'_> {
    /// Reads one entry's content, at most the per-file limit and within the project total.
    fn read(
        &mut self,
        path: &str,
        declared: u64,
        reader: &mut dyn Read,
    ) -> Result<Vec<u8>, ProjectError> {
        let max_file = self.settings.max_file_bytes;
        if declared > max_file {
            return Err(ProjectError::FileTooLarge {
                path: path.to_string(),
                bytes: declared,
                limit: max_file,
            });
        }
        let mut content = Vec::new();
        reader
            .take(max_file + 1)
            .read_to_end(&mut content)
            .map_err(|e| ProjectError::BadArchive(format!("entry {path}: {e}")))?;
        // The header said it was small; the data says otherwise.
        if content.len() as u64 > max_file {
            return Err(ProjectError::Bomb {
                path: path.to_string(),
                limit: max_file,
            });
        }
        self.total += content.len() as u64;
        if self.total > self.settings.max_project_bytes {
            return Err(ProjectError::Bomb {
                path: path.to_string(),
                limit: self.settings.max_project_bytes,
            });
        }
        Ok(content)
    }
}

fn read_zip(bytes: &[u8], settings: &ProjectSettings) -> Result<Vec<IncomingFile>, ProjectError> {
    let bad = |e: zip::result::ZipError| ProjectError::BadArchive(e.to_string());
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(bad)?;
    if zip.len() > settings.max_archive_entries {
        return Err(ProjectError::TooManyEntries {
            what: "archive",
            limit: settings.max_archive_entries,
        });
    }
    let mut tally = Tally { settings, total: 0 };
    let mut files = Vec::new();
    for idx in 0..zip.len() {
        let mut entry = zip.by_index(idx).map_err(bad)?;
        let raw = entry.name().to_string();
        if entry.is_symlink() {
            return Err(ProjectError::Link { path: raw });
        }
        if entry.is_dir() {
            // A folder entry still may not point outside the project.
            normalise_path(raw.trim_end_matches(['/', '\\']))?;
            continue;
        }
        let path = normalise_path(&raw)?;
        if is_clutter(&path) {
            continue;
        }
        let content = tally.read(&path, entry.size(), &mut entry)?;
        files.push(IncomingFile {
            path,
            bytes: content,
        });
    }
    Ok(files)
}

/// A reader that fails once more than `cap` bytes came through it.
struct Capped<R> {
    inner: R,
    remaining: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.remaining {
            self.exceeded.set(true);
            return Err(std::io::Error::other(
                "the archive expands past the project limit",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn read_tar(
    reader: impl Read,
    settings: &ProjectSettings,
) -> Result<Vec<IncomingFile>, ProjectError> {
    let exceeded = Rc::new(Cell::new(false));
    let cap = settings.max_project_bytes
        + TAR_OVERHEAD_PER_ENTRY * (settings.max_archive_entries as u64 + 2);
    let mut archive = tar::Archive::new(Capped {
        inner: reader,
        remaining: cap,
        exceeded: exceeded.clone(),
    });
    let io_error = |path: &str, e: std::io::Error| {
        if exceeded.get() {
            ProjectError::Bomb {
                path: path.to_string(),
                limit: settings.max_project_bytes,
            }
        } else {
            ProjectError::BadArchive(e.to_string())
        }
    };
    let mut tally = Tally { settings, total: 0 };
    let mut files = Vec::new();
    let mut count = 0;
    let entries = archive.entries().map_err(|e| io_error("the archive", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| io_error("the archive", e))?;
        count += 1;
        if count > settings.max_archive_entries {
            return Err(ProjectError::TooManyEntries {
                what: "archive",
                limit: settings.max_archive_entries,
            });
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).to_string();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(ProjectError::Link { path: raw });
        }
        if kind.is_dir() {
            normalise_path(raw.trim_end_matches(['/', '\\']))?;
            continue;
        }
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            return Err(ProjectError::BadArchive(format!(
                "entry {raw} is not a regular file"
            )));
        }
        let path = normalise_path(&raw)?;
        if is_clutter(&path) {
            continue;
        }
        let declared = entry.header().size().unwrap_or(0);
        let content = match tally.read(&path, declared, &mut entry) {
            Err(ProjectError::BadArchive(_)) if exceeded.get() => {
                return Err(ProjectError::Bomb {
                    path,
                    limit: settings.max_project_bytes,
                });
            }
            other => other?,
        };
        files.push(IncomingFile {
            path,
            bytes: content,
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn settings() -> ProjectSettings {
        ProjectSettings {
            max_file_bytes: 1000,
            max_project_bytes: 3000,
            max_archive_bytes: 100_000,
            max_archive_entries: 10,
            git_timeout: std::time::Duration::from_secs(5),
            git_max_bytes: 10_000,
            git_allow_local: true,
            chunk_tokens: 64,
            top_k: 4,
            ..crate::config::Settings::defaults(std::path::Path::new("/nonexistent")).projects
        }
    }

    fn zip_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, content) in entries {
            writer.start_file(*name, options).unwrap();
            writer.write_all(content).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    fn tar_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            // Written raw: `set_path` itself refuses `..`, and the reader must too.
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            builder.append(&header, content.as_slice()).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn zip_tar_and_tar_gz_archives_are_read_with_normalised_paths() {
        let entries = [
            ("proj/budget.py", b"x = 1\n".to_vec()),
            ("proj/README.md", b"# B\n".to_vec()),
        ];
        let zip = zip_of(&entries);
        let tar = tar_of(&entries);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        for bytes in [zip, tar, gz] {
            let files = read_archive(&bytes, &settings()).unwrap();
            let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
            assert_eq!(paths, vec!["proj/budget.py", "proj/README.md"]);
            assert_eq!(files[0].bytes, b"x = 1\n");
        }
    }

    #[test]
    fn entries_leaving_the_project_are_refused() {
        for name in ["../evil.py", "a/../../evil.py", "/etc/evil.py"] {
            let zip = zip_of(&[("ok.py", b"1".to_vec()), (name, b"2".to_vec())]);
            let err = read_archive(&zip, &settings()).unwrap_err();
            assert!(
                matches!(err, ProjectError::InvalidPath { .. }),
                "zip {name}: {err}"
            );
            let tar = tar_of(&[(name, b"2".to_vec())]);
            let err = read_archive(&tar, &settings()).unwrap_err();
            assert!(
                matches!(err, ProjectError::InvalidPath { .. }),
                "tar {name}: {err}"
            );
        }
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit_while_reading() {
        // Each entry under the per-file limit, together far over the project limit.
        let entries: Vec<(String, Vec<u8>)> = (0..8)
            .map(|i| (format!("f{i}.txt"), vec![b'a'; 900]))
            .collect();
        let entries: Vec<(&str, Vec<u8>)> = entries
            .iter()
            .map(|(n, c)| (n.as_str(), c.clone()))
            .collect();
        let err = read_archive(&zip_of(&entries), &settings()).unwrap_err();
        assert!(
            matches!(err, ProjectError::Bomb { limit: 3000, .. }),
            "{err}"
        );
        // One entry far over the per-file limit.
        let err =
            read_archive(&zip_of(&[("big.txt", vec![b'a'; 1_000_000])]), &settings()).unwrap_err();
        assert!(matches!(err, ProjectError::FileTooLarge { .. }), "{err}");
    }

    #[test]
    fn a_zip_whose_headers_understate_its_size_is_still_stopped() {
        let mut zip = zip_of(&[("small.txt", vec![b'a'; 200_000])]);
        // Patch the uncompressed size (local header offset 22, central directory offset 24).
        let declared = 10u32.to_le_bytes();
        zip[22..26].copy_from_slice(&declared);
        let central = zip
            .windows(4)
            .position(|w| w == b"PK\x01\x02")
            .expect("central directory");
        zip[central + 24..central + 28].copy_from_slice(&declared);
        let err = read_archive(&zip, &settings()).unwrap_err();
        assert!(
            matches!(err, ProjectError::Bomb { .. } | ProjectError::BadArchive(_)),
            "{err}"
        );
    }

    #[test]
    fn too_many_entries_links_and_unknown_formats_are_refused() {
        let entries: Vec<(String, Vec<u8>)> = (0..11)
            .map(|i| (format!("f{i}.txt"), b"x".to_vec()))
            .collect();
        let entries: Vec<(&str, Vec<u8>)> = entries
            .iter()
            .map(|(n, c)| (n.as_str(), c.clone()))
            .collect();
        assert!(matches!(
            read_archive(&zip_of(&entries), &settings()),
            Err(ProjectError::TooManyEntries { limit: 10, .. })
        ));
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "link.py", "/etc/passwd")
            .unwrap();
        let tar = builder.into_inner().unwrap();
        assert!(matches!(
            read_archive(&tar, &settings()),
            Err(ProjectError::Link { .. })
        ));
        assert!(matches!(
            read_archive(b"just some text", &settings()),
            Err(ProjectError::UnknownArchive)
        ));
        assert!(matches!(
            read_archive(&[b'P'; 200_000], &settings()),
            Err(ProjectError::ArchiveTooLarge { .. })
        ));
    }

    #[test]
    fn clutter_and_folders_are_skipped() {
        let zip = zip_of(&[
            ("__MACOSX/._a.py", b"x".to_vec()),
            ("proj/.DS_Store", b"x".to_vec()),
            ("proj/a.py", b"a = 1".to_vec()),
        ]);
        let files = read_archive(&zip, &settings()).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "proj/a.py");
    }

    /// Arbitrary bytes and arbitrary entry names: reading never panics, and every path it
    /// returns stays inside the project.
    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use super::{settings, tar_of, zip_of};
        use crate::project::normalise_path;

        /// A path inside the project: what `normalise_path` gives back unchanged, with no
        /// `..`, no empty part, not absolute, no backslash, no `:` (drive letters included).
        fn stays_inside(path: &str) -> bool {
            normalise_path(path).ok().as_deref() == Some(path)
                && !path.starts_with('/')
                && !path.contains('\\')
                && !path.contains(':')
                && path
                    .split('/')
                    .all(|part| !part.is_empty() && part != "." && part != "..")
        }

        /// Names built from the pieces that try to escape: `..`, `/`, `\`, drive letters.
        fn entry_name() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    Just("..".to_string()),
                    Just(".".to_string()),
                    Just("/".to_string()),
                    Just("\\".to_string()),
                    Just("C:".to_string()),
                    Just("~".to_string()),
                    "[a-zA-Z0-9_ .-]{1,8}",
                    "\\PC{1,3}",
                ],
                1..8,
            )
            .prop_map(|parts| parts.concat())
            .prop_filter("fits a tar header name", |name| {
                !name.is_empty() && name.len() < 100 && !name.contains('\0')
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_bytes_never_panic_the_reader(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
                let _ = read_archive(&bytes, &settings());
            }

            #[test]
            fn a_damaged_archive_never_panics_the_reader(
                cut in 0usize..4096,
                flip in prop::collection::vec((0usize..4096, any::<u8>()), 0..8),
                gzip in any::<bool>(),
            ) {
                let entries = [("p/a.py", b"x = 1\n".to_vec()), ("p/b.md", b"# b\n".to_vec())];
                for mut bytes in [zip_of(&entries), tar_of(&entries)] {
                    if gzip {
                        use std::io::Write;
                        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                        gz.write_all(&bytes).unwrap();
                        bytes = gz.finish().unwrap();
                    }
                    for (at, byte) in &flip {
                        if !bytes.is_empty() {
                            let at = at % bytes.len();
                            bytes[at] = *byte;
                        }
                    }
                    bytes.truncate(cut.max(1));
                    let _ = read_archive(&bytes, &settings());
                }
            }

            #[test]
            fn no_entry_name_escapes_the_project(mut names in prop::collection::vec(entry_name(), 1..5)) {
                // A zip writer refuses a name twice; the reader's duplicates have their own test.
                names.sort();
                names.dedup();
                let entries: Vec<(&str, Vec<u8>)> =
                    names.iter().map(|n| (n.as_str(), b"x = 1\n".to_vec())).collect();
                for bytes in [zip_of(&entries), tar_of(&entries)] {
                    if let Ok(files) = read_archive(&bytes, &settings()) {
                        for file in files {
                            prop_assert!(stays_inside(&file.path), "{:?} from {:?}", file.path, names);
                        }
                    }
                }
            }

            #[test]
            fn a_normalised_path_never_escapes_and_a_refusal_says_why(raw in "\\PC{0,64}|(\\.\\.|/|\\\\|[a-z]{1,3}|:){1,12}") {
                match normalise_path(&raw) {
                    Ok(path) => prop_assert!(stays_inside(&path), "{:?} from {:?}", path, raw),
                    Err(error) => {
                        let message = error.to_string();
                        prop_assert!(message.starts_with("path "), "{}", message);
                    }
                }
            }
        }
    }
}
