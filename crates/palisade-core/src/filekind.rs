/// How many leading bytes [`classify`] looks at (the kernel reads the same
/// amount to find a shebang).
pub const CLASSIFY_HEADER_LEN: usize = 256;

/// What a file's first bytes say it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileKind {
    /// An ELF object.
    Elf {
        /// `e_type == ET_DYN`: a shared object or a position-independent executable.
        shared: bool,
    },
    /// A script starting with `#!`.
    Script {
        /// The interpreter named by the shebang line (first word).
        interpreter: String,
    },
    /// Anything else.
    Other,
}

impl FileKind {
    /// Whether the content is loadable machine code or an executable script.
    pub const fn is_code(&self) -> bool {
        !matches!(self, FileKind::Other)
    }
}

/// Classify a file from its first [`CLASSIFY_HEADER_LEN`] bytes (fewer if the
/// file is shorter).
pub fn classify(header: &[u8]) -> FileKind {
    if header.len() >= 18 && header.starts_with(b"\x7fELF") {
        // e_type is a half-word at offset 16, in the byte order given by EI_DATA.
        let e_type = match header[5] {
            2 => u16::from_be_bytes([header[16], header[17]]),
            _ => u16::from_le_bytes([header[16], header[17]]),
        };
        return FileKind::Elf {
            shared: e_type == 3,
        };
    }
    if let Some(rest) = header.strip_prefix(b"#!") {
        let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let interpreter = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        return FileKind::Script { interpreter };
    }
    FileKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
        let exec = [elf.clone(), vec![2, 0]].concat();
        elf.extend([3, 0]);
        assert_eq!(classify(&elf), FileKind::Elf { shared: true });
        assert_eq!(classify(&exec), FileKind::Elf { shared: false });
        assert_eq!(
            classify(b"\x7fELF"),
            FileKind::Other,
            "truncated ELF header"
        );
        assert_eq!(
            classify(b"#!/bin/sh -e\necho hi\n"),
            FileKind::Script {
                interpreter: "/bin/sh".into()
            }
        );
        assert_eq!(
            classify(b"#! /usr/bin/env python3"),
            FileKind::Script {
                interpreter: "/usr/bin/env".into()
            }
        );
        assert_eq!(
            classify(b"#!"),
            FileKind::Script {
                interpreter: String::new()
            }
        );
        assert_eq!(classify(b"hello"), FileKind::Other);
        assert_eq!(classify(b""), FileKind::Other);
        assert!(!FileKind::Other.is_code());
    }
}
