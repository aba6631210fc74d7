//! Path patterns used by rules: absolute paths where `*` matches any run of
//! characters within one path segment, `?` one character within a segment,
//! and a segment `**` any number of segments (including none).
//!
//! Each pattern has a *literal directory*: the longest leading run of
//! segments without wildcards (not counting the last segment). The rule
//! engine indexes patterns by it, so a decision looks at the rules of the
//! file's ancestor directories only, however many rules there are.
use std::fmt;

/// A parsed path pattern.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
    literal_dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    /// `**`: any number of segments.
    AnyDepth,
    /// A segment, possibly with `*` and `?`.
    Glob(String),
}

/// Why a string is not a path pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path pattern {got:?}: {why}")]
pub struct PatternError {
    got: String,
    why: &'static str,
}

impl PathPattern {
    /// Parse a pattern. It must be absolute; empty segments and `.`/`..`
    /// are refused (patterns are matched against canonical paths).
    pub fn parse(s: &str) -> Result<PathPattern, PatternError> {
        let err = |why| PatternError {
            got: s.chars().take(200).collect(),
            why,
        };
        if !s.starts_with('/') {
            return Err(err("must be an absolute path"));
        }
        if s.len() > 4096 || s.contains('\0') {
            return Err(err("too long or contains NUL"));
        }
        let body = s.trim_end_matches('/');
        let mut segments = Vec::new();
        if !body.is_empty() {
            for seg in body[1..].split('/') {
                match seg {
                    "" => return Err(err("empty path segment")),
                    "." | ".." => return Err(err("`.` and `..` are not allowed")),
                    "**" => segments.push(Segment::AnyDepth),
                    s if s.contains("**") => return Err(err("`**` must be a whole segment")),
                    s => segments.push(Segment::Glob(s.to_owned())),
                }
            }
        }
        if segments.iter().filter(|s| **s == Segment::AnyDepth).count() > 4 {
            return Err(err("at most four `**` segments"));
        }
        if segments.is_empty() {
            return Err(err(
                "matches nothing: give at least one segment (`/**` matches everything)",
            ));
        }
        let mut literal = Vec::new();
        for seg in &segments[..segments.len() - 1] {
            match seg {
                Segment::Glob(g) if !g.contains(['*', '?']) => literal.push(g.as_str()),
                _ => break,
            }
        }
        let literal_dir = format!("/{}", literal.join("/"));
        Ok(PathPattern {
            text: s.to_owned(),
            segments,
            literal_dir,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The longest wildcard-free leading directory (`/` at least).
    pub fn literal_dir(&self) -> &str {
        &self.literal_dir
    }

    /// Whether `path` (absolute, canonical) matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        match_segments(&self.segments, &parts)
    }

    /// Whether every path under directory `dir` matches (the pattern is
    /// `dir/**` or broader): used to tell a whole-folder rule.
    pub fn covers_dir(&self, dir: &str) -> bool {
        self.matches(&format!("{}/x", dir.trim_end_matches('/')))
            && matches!(self.segments.last(), Some(Segment::AnyDepth))
    }
}

/// Whether the segments match the path's parts, in O(segments x parts)
/// glob checks: `reach[j]` says the segments so far can consume exactly
/// `parts[..j]`. (Trying every split for each `**` instead grows with the
/// parts to the power of the `**` count: hours for `/**/**/**/**/x`
/// against a 2000-part path, which any local user can create.)
fn match_segments(pat: &[Segment], parts: &[&str]) -> bool {
    let mut reach = vec![false; parts.len() + 1];
    reach[0] = true;
    for seg in pat {
        let mut next = vec![false; parts.len() + 1];
        match seg {
            Segment::AnyDepth => {
                let mut any = false;
                for (n, r) in next.iter_mut().zip(&reach) {
                    any |= *r;
                    *n = any;
                }
            }
            Segment::Glob(g) => {
                for (j, part) in parts.iter().enumerate() {
                    if reach[j] && glob(g.as_bytes(), part.as_bytes()) {
                        next[j + 1] = true;
                    }
                }
            }
        }
        if !next.contains(&true) {
            return false;
        }
        reach = next;
    }
    reach[parts.len()]
}

/// `*` any run, `?` one byte, else literal; within one segment.
fn glob(g: &[u8], s: &[u8]) -> bool {
    // Iterative matcher with backtracking to the last `*`: linear in
    // practice, no recursion on hostile input.
    let (mut gi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if gi < g.len() && (g[gi] == b'?' || g[gi] == s[si]) {
            gi += 1;
            si += 1;
        } else if gi < g.len() && g[gi] == b'*' {
            star = Some(gi);
            mark = si;
            gi += 1;
        } else if let Some(st) = star {
            gi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while gi < g.len() && g[gi] == b'*' {
        gi += 1;
    }
    gi == g.len()
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPattern({:?})", self.text)
    }
}

impl serde::Serialize for PathPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for PathPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PathPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The ancestor directories of an absolute path, nearest first, ending with
/// `/`: `/a/b/c` gives `/a/b`, `/a`, `/`.
pub fn ancestor_dirs(path: &str) -> impl Iterator<Item = &str> {
    let mut end = Some(path.len());
    std::iter::from_fn(move || {
        let e = end?;
        let cut = path[..e].rfind('/')?;
        if cut == 0 {
            end = None;
            Some("/")
        } else {
            end = Some(cut);
            Some(&path[..cut])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathPattern {
        PathPattern::parse(s).unwrap()
    }

    /// Four `**` against a path of 2000 parts: answered at once (trying
    /// every split took about 7e11 steps), and still right.
    #[test]
    fn many_any_depth_segments_on_a_deep_path_stay_polynomial() {
        let deep = "/a".repeat(2000);
        let start = std::time::Instant::now();
        assert!(!p("/**/**/**/**/x").matches(&deep));
        assert!(p("/**/**/**/**/a").matches(&deep));
        assert!(p("/a/**/a/**/a/**/a/**").matches(&deep));
        assert!(!p("/a/**/b/**").matches(&deep));
        assert!(p("/**/a/*/a/**").matches(&format!("{deep}/x")));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn matching_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("/usr/bin/python3", "/usr/bin/python3", true),
            ("/usr/bin/python3", "/usr/bin/python3.11", false),
            ("/usr/bin/python3*", "/usr/bin/python3.11", true),
            ("/usr/bin/*", "/usr/bin/ls", true),
            ("/usr/bin/*", "/usr/bin/x/ls", false),
            ("/tmp/**", "/tmp/a/b/c", true),
            ("/tmp/**", "/tmp", true),
            ("/tmp/**", "/tmpx/a", false),
            ("/home/*/bin/*", "/home/alice/bin/tool", true),
            ("/home/*/bin/*", "/home/alice/x/bin/tool", false),
            ("/**/*.sh", "/opt/x/run.sh", true),
            ("/**/*.sh", "/run.sh", true),
            ("/opt/?pp/*", "/opt/app/x", true),
            ("/opt/?pp/*", "/opt/aapp/x", false),
            ("/a/*b*c", "/a/xxbyyc", true),
            ("/a/*b*c", "/a/xxbyy", false),
            ("/**", "/anything/at/all", true),
        ];
        for (pat, path, want) in cases {
            assert_eq!(p(pat).matches(path), *want, "{pat} vs {path}");
        }
    }

    #[test]
    fn literal_dirs_and_errors() {
        assert_eq!(p("/usr/bin/python3").literal_dir(), "/usr/bin");
        assert_eq!(p("/home/*/bin/x").literal_dir(), "/home");
        assert_eq!(p("/**/*.sh").literal_dir(), "/");
        assert_eq!(p("/tmp/**").literal_dir(), "/tmp");
        assert_eq!(p("/x").literal_dir(), "/");
        for bad in ["", "relative/x", "/a//b", "/a/../b", "/a/x**", "/", "/a/\0"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(p("/tmp/**").covers_dir("/tmp"));
        assert!(!p("/tmp/*").covers_dir("/tmp"));
    }

    #[test]
    fn ancestors() {
        assert_eq!(
            ancestor_dirs("/a/b/c").collect::<Vec<_>>(),
            ["/a/b", "/a", "/"]
        );
        assert_eq!(ancestor_dirs("/a").collect::<Vec<_>>(), ["/"]);
    }

    #[test]
    fn hostile_globs_stay_fast() {
        let pat = p(&format!("/{}", "*a".repeat(50)));
        let t = std::time::Instant::now();
        assert!(!pat.matches(&format!("/{}b", "a".repeat(5000))));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }
}
