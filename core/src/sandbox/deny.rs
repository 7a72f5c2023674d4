//! Deny lists matched against a [`RelPath`] (lexical == physical, since no symlink is
//! ever followed).
//!
//! Pattern syntax, gitignore-like:
//! * without a `/` (`.env`, `.env.*`, `.bashrc`): matches a component of that name at any
//!   depth — and so everything beneath a directory of that name;
//! * with a `/` (`.github/workflows`): anchored at the workspace root, matches
//!   that path and everything beneath it;
//! * `*` and `?` glob within one component.
//!
//! Matching is ASCII case-insensitive, so `.GIT/Hooks` is refused too (a case-folding
//! filesystem would make them the same directory).

use super::path::RelPath;

/// Files an agent must never write, whatever the configuration says: they make code run
/// outside the sandbox or hold secrets. Config can only add to it.
///
/// * `.git` at any depth, directory or file: git executes what its metadata names
///   (hooks, `core.fsmonitor`/`core.pager`/`core.sshCommand`, aliases, filters), and
///   follows indirections inside it (`commondir`, `modules/<sub>/config`, a `.git` file's
///   `gitdir:`) — so all of it, and nested repositories too;
/// * `.gitconfig` (read from `$HOME`), and `.githooks`/`.husky`, the usual targets of
///   `core.hooksPath`;
/// * shell start-up files and direnv's `.envrc`, which run on login or `cd`;
/// * secrets: `.env*`, `.ssh`.
pub const MANDATORY_DENY_WRITE: &[&str] = &[
    ".git",
    ".gitconfig",
    ".githooks",
    ".husky",
    ".env",
    ".env.*",
    ".envrc",
    ".ssh",
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".zlogout",
    ".cshrc",
    ".tcshrc",
    ".kshrc",
    ".login",
    ".logout",
];

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    anchored: bool,
    /// Lower-cased, for matching.
    parts: Vec<String>,
}

/// A compiled deny list.
#[derive(Debug, Clone, Default)]
pub struct DenyList {
    patterns: Vec<Pattern>,
}

impl DenyList {
    /// Compiles patterns; an empty pattern, an absolute one or one with `..` is an error.
    pub fn new<I, S>(patterns: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for p in patterns {
            let text = p.as_ref().trim().to_string();
            let body = text.trim_end_matches('/');
            if body.is_empty() || body.starts_with('/') {
                return Err(format!(
                    "deny pattern {text:?} must be a non-empty relative path"
                ));
            }
            let parts: Vec<String> = body
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .map(str::to_ascii_lowercase)
                .collect();
            if parts.iter().any(|c| c == "..") {
                return Err(format!("deny pattern {text:?} must not contain '..'"));
            }
            out.push(Pattern {
                anchored: parts.len() > 1,
                parts,
                text,
            });
        }
        Ok(Self { patterns: out })
    }

    /// The pattern that `rel` (or one of its ancestors) matches, if any.
    pub fn matches(&self, rel: &RelPath) -> Option<&str> {
        let comps: Vec<String> = rel
            .components()
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect();
        self.patterns.iter().find_map(|p| {
            let hit = if p.anchored {
                comps.len() >= p.parts.len()
                    && p.parts
                        .iter()
                        .zip(&comps)
                        .all(|(pat, c)| glob_component(pat, c))
            } else {
                comps.iter().any(|c| glob_component(&p.parts[0], c))
            };
            hit.then_some(p.text.as_str())
        })
    }

    /// The pattern of something *beneath* `rel` that `rel` contains, for deletes and
    /// renames of a directory (deleting `.github` would delete `.github/workflows`). Unanchored
    /// patterns can match anywhere, so only anchored ones are decided here; the delete
    /// walk checks every entry it meets against [`DenyList::matches`].
    pub fn contains_anchored(&self, rel: &RelPath) -> Option<&str> {
        let comps: Vec<String> = rel
            .components()
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect();
        self.patterns.iter().find_map(|p| {
            let hit = p.anchored
                && comps.len() < p.parts.len()
                && p.parts
                    .iter()
                    .zip(&comps)
                    .all(|(pat, c)| glob_component(pat, c));
            hit.then_some(p.text.as_str())
        })
    }

    /// The patterns, as configured.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|p| p.text.as_str())
    }
}

/// `*`/`?` glob over one path component (no `/` involved).
pub fn glob_component(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn mandatory_patterns() {
        let d = DenyList::new(MANDATORY_DENY_WRITE).unwrap();
        assert_eq!(d.matches(&rel(".git/hooks/pre-commit")), Some(".git"));
        assert_eq!(d.matches(&rel(".git")), Some(".git"));
        assert_eq!(d.matches(&rel(".GIT/Hooks/x")), Some(".git"));
        assert_eq!(d.matches(&rel("a/../.git/config")), Some(".git"));
        assert_eq!(d.matches(&rel(".git/commondir")), Some(".git"));
        assert_eq!(d.matches(&rel(".git/modules/sub/config")), Some(".git"));
        assert_eq!(
            d.matches(&rel("sub/.git/hooks/x")),
            Some(".git"),
            "nested repositories"
        );
        assert_eq!(
            d.matches(&rel("vendor/lib/.git")),
            Some(".git"),
            "a .git file"
        );
        assert_eq!(d.matches(&rel(".gitignore")), None);
        assert_eq!(d.matches(&rel(".gitmodules")), None);
        assert_eq!(d.matches(&rel(".husky/pre-commit")), Some(".husky"));
        assert_eq!(d.matches(&rel(".env")), Some(".env"));
        assert_eq!(d.matches(&rel("app/.env.local")), Some(".env.*"));
        assert_eq!(d.matches(&rel("app/.envrc")), Some(".envrc"));
        assert_eq!(d.matches(&rel("env.txt")), None);
        assert_eq!(d.matches(&rel(".bashrc")), Some(".bashrc"));
        assert_eq!(d.matches(&rel("home/.zshrc")), Some(".zshrc"));
        assert_eq!(d.matches(&rel(".ssh/authorized_keys")), Some(".ssh"));
        assert_eq!(d.matches(&rel("src/main.rs")), None);
        let anchored = DenyList::new([".github/workflows"]).unwrap();
        assert_eq!(
            anchored.contains_anchored(&rel(".github")),
            Some(".github/workflows")
        );
        assert_eq!(
            anchored.contains_anchored(&rel("")),
            Some(".github/workflows")
        );
        assert_eq!(anchored.contains_anchored(&rel("src")), None);
    }

    #[test]
    fn globbing() {
        assert!(glob_component("*.rs", "main.rs"));
        assert!(!glob_component("*.rs", "main.rsx"));
        assert!(glob_component("a?c", "abc"));
        assert!(glob_component("*", ""));
        assert!(glob_component("*a*b*", "xxaxxbxx"));
        assert!(!glob_component("*a*b", "xxaxxbxx"));
    }

    #[test]
    fn bad_patterns() {
        assert!(DenyList::new(["/etc"]).is_err());
        assert!(DenyList::new([""]).is_err());
        assert!(DenyList::new(["a/../b"]).is_err());
    }
}
