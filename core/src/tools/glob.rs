//! The glob language of `fs:search`, matched in polynomial time with a deadline.
//!
//! Syntax (nothing else is special; there are no classes, braces or escapes):
//!
//! * `*` — any run of characters within one name (never `/`);
//! * `?` — exactly one character within a name;
//! * `**` as a whole component — any number of directories, including none;
//! * a pattern without `/` matches the entry's name only, at any depth; with `/` it
//!   matches the whole path below the search directory. Empty components (a leading,
//!   trailing or doubled `/`) are ignored.
//!
//! Mechanism. The old matcher tried every split of the path for every `**`
//! recursively: `**/**/**/**/**/**/**/**/nomatch` against a path of depth *d* is
//! C(d+8, 8) attempts, and it only looked at the clock between directory entries, so
//! one 0.5 s call ran for 14 s. Here a path pattern is compiled into its components and
//! run as a set-of-states automaton over the path's components: state *i* means "the
//! first *i* pattern components have matched". `**` keeps its state on any component
//! and also lets the next state through without consuming one; consecutive `**` are
//! collapsed. One step costs at most the sum of the component matches, so a whole path
//! is O(depth × pattern length × name length), and the search steps it once per entry
//! (the states of the parent directory are kept). A name is matched against `*`/`?`
//! with the classic single-backtrack-point scan, O(pattern × name) in the worst case.
//!
//! Every inner loop ticks a [`Budget`] that asks its `expired` callback (deadline or
//! cancel flag) every [`CHECK_EVERY`] steps, so no match runs more than a few
//! microseconds past the call's deadline.

use std::fmt;

/// Steps between two looks at the clock (one step is a few nanoseconds).
const CHECK_EVERY: u32 = 4096;

/// The deadline passed, or the call was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expired;

/// Counts matcher steps and asks `expired` every [`CHECK_EVERY`] of them.
pub(crate) struct Budget<'a> {
    left: u32,
    expired: &'a dyn Fn() -> bool,
}

impl<'a> Budget<'a> {
    pub(crate) fn new(expired: &'a dyn Fn() -> bool) -> Self {
        Self {
            left: CHECK_EVERY,
            expired,
        }
    }

    /// One step of work; `Err` once the deadline passed.
    #[inline]
    fn tick(&mut self) -> Result<(), Expired> {
        self.left -= 1;
        if self.left == 0 {
            self.left = CHECK_EVERY;
            if (self.expired)() {
                return Err(Expired);
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    One,
    Star,
}

/// One name pattern (`*`, `?`, literals).
#[derive(Clone, PartialEq, Eq)]
struct NamePat {
    toks: Vec<Tok>,
}

impl NamePat {
    fn new(pattern: &str) -> Self {
        let mut toks: Vec<Tok> = Vec::with_capacity(pattern.len());
        for c in pattern.chars() {
            let t = match c {
                '*' => Tok::Star,
                '?' => Tok::One,
                c => Tok::Lit(c),
            };
            // `**` inside a name is `*`: one star is enough for the scan.
            if !(t == Tok::Star && toks.last() == Some(&Tok::Star)) {
                toks.push(t);
            }
        }
        Self { toks }
    }

    /// The single-backtrack-point scan: on a mismatch, retry from the last `*` with it
    /// swallowing one more character. Each retry moves that start forward, so there
    /// are at most `name` retries of at most `pattern` steps each.
    fn matches(&self, name: &[char], budget: &mut Budget<'_>) -> Result<bool, Expired> {
        let p = &self.toks;
        let (mut pi, mut ni) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ni < name.len() {
            budget.tick()?;
            match p.get(pi) {
                Some(Tok::One) => {
                    pi += 1;
                    ni += 1;
                }
                Some(Tok::Lit(c)) if *c == name[ni] => {
                    pi += 1;
                    ni += 1;
                }
                Some(Tok::Star) => {
                    star = Some((pi, ni));
                    pi += 1;
                }
                _ => match star {
                    Some((sp, sn)) => {
                        pi = sp + 1;
                        ni = sn + 1;
                        star = Some((sp, sn + 1));
                    }
                    None => return Ok(false),
                },
            }
        }
        Ok(p[pi..].iter().all(|t| *t == Tok::Star))
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Comp {
    /// `**`
    Deep,
    Name(NamePat),
}

/// A compiled `fs:search` glob.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Glob(Kind);

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    /// No `/`: the entry's name is matched.
    Name(NamePat),
    /// With `/`: the path below the search directory is matched, component-wise.
    Path(Vec<Comp>),
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Name(p) => write!(f, "Glob::Name({} tokens)", p.toks.len()),
            Kind::Path(c) => write!(f, "Glob::Path({} components)", c.len()),
        }
    }
}

/// Which pattern components have matched so far (the automaton's state set), for the
/// path of one directory; [`Glob::step`] extends it by one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct States(Vec<bool>);

impl Glob {
    pub(crate) fn new(pattern: &str) -> Self {
        if !pattern.contains('/') {
            return Self(Kind::Name(NamePat::new(pattern)));
        }
        let mut comps: Vec<Comp> = Vec::new();
        for c in pattern.split('/').filter(|c| !c.is_empty()) {
            let comp = if c == "**" {
                Comp::Deep
            } else {
                Comp::Name(NamePat::new(c))
            };
            // `**/**` matches exactly what `**` matches.
            if !(comp == Comp::Deep && comps.last() == Some(&Comp::Deep)) {
                comps.push(comp);
            }
        }
        Self(Kind::Path(comps))
    }

    /// The states before any component (the search directory itself).
    pub(crate) fn start(&self) -> States {
        match &self.0 {
            Kind::Name(_) => States(Vec::new()),
            Kind::Path(comps) => {
                let mut s = vec![false; comps.len() + 1];
                s[0] = true;
                close(comps, &mut s);
                States(s)
            }
        }
    }

    /// The states after one more path component `name`.
    pub(crate) fn step(
        &self,
        states: &States,
        name: &[char],
        budget: &mut Budget<'_>,
    ) -> Result<States, Expired> {
        let Kind::Path(comps) = &self.0 else {
            return Ok(States(Vec::new()));
        };
        let mut next = vec![false; comps.len() + 1];
        for (i, comp) in comps.iter().enumerate() {
            if !states.0[i] {
                continue;
            }
            budget.tick()?;
            match comp {
                Comp::Deep => next[i] = true,
                Comp::Name(p) => {
                    if !next[i + 1] && p.matches(name, budget)? {
                        next[i + 1] = true;
                    }
                }
            }
        }
        close(comps, &mut next);
        Ok(States(next))
    }

    /// Whether the entry reached with `states` (and called `name`) matches.
    pub(crate) fn is_match(
        &self,
        states: &States,
        name: &[char],
        budget: &mut Budget<'_>,
    ) -> Result<bool, Expired> {
        match &self.0 {
            Kind::Name(p) => p.matches(name, budget),
            Kind::Path(_) => Ok(states.0.last() == Some(&true)),
        }
    }

    /// Whether anything below the directory reached with `states` can still match
    /// (if not, the search need not descend into it).
    pub(crate) fn may_match_below(&self, states: &States) -> bool {
        match &self.0 {
            Kind::Name(_) => true,
            Kind::Path(_) => states.0[..states.0.len() - 1].iter().any(|s| *s),
        }
    }

    /// Whether the `/`-separated `path` matches (the whole automaton at once).
    #[cfg(test)]
    pub(crate) fn matches_path(
        &self,
        path: &str,
        budget: &mut Budget<'_>,
    ) -> Result<bool, Expired> {
        let comps: Vec<Vec<char>> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(|c| c.chars().collect())
            .collect();
        let Some((last, dirs)) = comps.split_last() else {
            return self.is_match(&self.start(), &[], budget);
        };
        let mut s = self.start();
        for d in dirs {
            s = self.step(&s, d, budget)?;
        }
        let s = self.step(&s, last, budget)?;
        self.is_match(&s, last, budget)
    }
}

/// Epsilon closure: a `**` may match no component at all.
fn close(comps: &[Comp], s: &mut [bool]) {
    for i in 0..comps.len() {
        if s[i] && comps[i] == Comp::Deep {
            s[i + 1] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn never() -> bool {
        false
    }

    fn m(pattern: &str, path: &str) -> bool {
        Glob::new(pattern)
            .matches_path(path, &mut Budget::new(&never))
            .unwrap()
    }

    /// The reference: the old matcher, by exhaustive recursion (exponential, so only
    /// on small inputs).
    fn reference(pattern: &str, path: &str) -> bool {
        fn name(p: &[char], s: &[char]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some(('*', rest)) => (0..=s.len()).any(|i| name(rest, &s[i..])),
                Some(('?', rest)) => !s.is_empty() && name(rest, &s[1..]),
                Some((c, rest)) => s.first() == Some(c) && name(rest, &s[1..]),
            }
        }
        fn comp(p: &str, s: &str) -> bool {
            name(
                &p.chars().collect::<Vec<_>>(),
                &s.chars().collect::<Vec<_>>(),
            )
        }
        fn rec(p: &[&str], s: &[&str]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some((&"**", rest)) => (0..=s.len()).any(|i| rec(rest, &s[i..])),
                Some((first, rest)) => !s.is_empty() && comp(first, s[0]) && rec(rest, &s[1..]),
            }
        }
        if !pattern.contains('/') {
            return comp(pattern, path.rsplit('/').next().unwrap_or(path));
        }
        let p: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
        let s: Vec<&str> = path.split('/').collect();
        rec(&p, &s)
    }

    #[test]
    fn examples() {
        assert!(m("*.rs", "src/main.rs"));
        assert!(m("src/*.rs", "src/main.rs"));
        assert!(!m("src/*.rs", "src/a/main.rs"));
        assert!(m("src/**/*.rs", "src/a/b/main.rs"));
        assert!(m("src/**/*.rs", "src/main.rs"));
        assert!(m("src/**", "src"));
        assert!(m("src/**", "src/a/b"));
        assert!(!m("src/**", "srcx/a"));
        assert!(m("**/test_?.py", "a/b/test_1.py"));
        assert!(!m("**/test_?.py", "a/b/test_10.py"));
        assert!(m("**/**/**/x", "x"));
        assert!(m("a/**/**/b", "a/b"));
        assert!(m("a/**/**/b", "a/q/r/s/b"));
        assert!(!m("a/**/**/b", "a/q/r/s/b/c"));
        assert!(m("/a//b/", "a/b"));
        assert!(m("a**b", "axxb"));
        assert!(!m("a**b", "ax/xb"));
        assert!(m("é?/*ü", "éa/xü"));
        assert!(m("?", "é"));
    }

    #[test]
    fn pruning_says_when_nothing_below_can_match() {
        let g = Glob::new("src/*.rs");
        let mut b = Budget::new(&never);
        let s = g.start();
        let src = g.step(&s, &['s', 'r', 'c'], &mut b).unwrap();
        assert!(g.may_match_below(&src));
        let other = g.step(&s, &['d', 'o', 'c'], &mut b).unwrap();
        assert!(!g.may_match_below(&other));
        let deep = Glob::new("**/x");
        let d = deep.step(&deep.start(), &['q'], &mut b).unwrap();
        assert!(deep.may_match_below(&d));
        assert!(Glob::new("*.rs").may_match_below(&Glob::new("*.rs").start()));
    }

    #[test]
    fn the_matcher_stops_once_expired() {
        let yes = || true;
        let name: String = "a".repeat(250);
        // Worst case of the scan: every retry runs along the literal run, then fails.
        let pattern = format!("*{}b", "a".repeat(120));
        let g = Glob::new(&pattern);
        assert_eq!(g.matches_path(&name, &mut Budget::new(&yes)), Err(Expired));
        let deep = format!("{}/{}", "**/*".repeat(100), "*a".repeat(100));
        let path = vec![name.as_str(); 50].join("/");
        assert_eq!(
            Glob::new(&deep).matches_path(&path, &mut Budget::new(&yes)),
            Err(Expired)
        );
        assert_eq!(
            Glob::new(&deep).matches_path(&path, &mut Budget::new(&never)),
            Ok(false)
        );
    }

    #[test]
    fn adversarial_patterns_are_fast_without_a_deadline() {
        let t0 = std::time::Instant::now();
        let path = vec!["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"; 200].join("/");
        for pattern in [
            format!("{}nomatch", "**/".repeat(500)),
            format!("{}b", "**/*a*a*a*a*a*a*a*a/".repeat(40)),
            format!("**/{}b", "*a".repeat(500)),
            format!("{}/x", "*/**".repeat(200)),
        ] {
            assert!(!m(&pattern, &path), "{pattern}");
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t0.elapsed()
        );
    }

    fn name(p: &str, s: &str) -> bool {
        NamePat::new(p)
            .matches(&s.chars().collect::<Vec<_>>(), &mut Budget::new(&never))
            .unwrap()
    }

    fn pattern_strategy() -> impl Strategy<Value = String> {
        let comp = prop_oneof![
            Just("**".to_string()),
            "[ab*?]{0,4}".prop_map(|s| s),
            Just("*".to_string()),
        ];
        prop_oneof![
            "[ab*?]{0,5}".prop_map(|s| s),
            prop::collection::vec(comp, 1..6).prop_map(|v| v.join("/")),
            prop::collection::vec("[ab*?]{0,3}|\\*\\*", 1..5)
                .prop_map(|v| format!("/{}/", v.join("//"))),
        ]
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec("[ab]{1,4}", 1..7).prop_map(|v| v.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn agrees_with_the_exhaustive_reference(p in pattern_strategy(), s in path_strategy()) {
            prop_assert_eq!(m(&p, &s), reference(&p, &s), "pattern {:?} path {:?}", p, s);
        }

        #[test]
        fn names_agree_with_the_reference_and_the_deny_list_matcher(
            p in "[ab*?]{0,8}", s in "[ab]{0,8}"
        ) {
            // deny.rs matches its patterns with the same scan: the two languages agree.
            let want = reference(&p, &s);
            prop_assert_eq!(name(&p, &s), want);
            prop_assert_eq!(crate::sandbox::deny::glob_component(&p, &s), want);
        }

        #[test]
        fn stepping_agrees_with_whole_path_matching(p in pattern_strategy(), s in path_strategy()) {
            // What the search does: step the parent's states once per entry.
            let g = Glob::new(&p);
            let mut b = Budget::new(&never);
            let comps: Vec<Vec<char>> = s.split('/').map(|c| c.chars().collect()).collect();
            let mut st = g.start();
            for (i, c) in comps.iter().enumerate() {
                let next = g.step(&st, c, &mut b).unwrap();
                let prefix = s.split('/').take(i + 1).collect::<Vec<_>>().join("/");
                prop_assert_eq!(g.is_match(&next, c, &mut b).unwrap(), reference(&p, &prefix));
                // Pruning is sound: if nothing below can match, no extension matches.
                if !g.may_match_below(&next) {
                    for ext in ["a", "b/a", "ab/ba/a"] {
                        let longer = format!("{}/{}", prefix, ext);
                        prop_assert!(!reference(&p, &longer), "{:?} {:?}", p, longer);
                    }
                }
                st = next;
            }
        }
    }
}
