//! Phrase packs: the detector's knowledge, as data (`models/phrases/*.toml`), loaded and
//! validated at start. A mistake in a pack is an error naming the file and line.

use std::path::Path;

use serde::Deserialize;

use super::matcher::{compile_pattern, Pattern};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackFile {
    language: String,
    /// Tokens that may be skipped between two words of a pattern.
    max_gap: usize,
    levels: Levels,
    /// Score ceiling when all evidence is from one category not marked `standalone`: one
    /// kind of cue alone ("your account") is what honest calls say too.
    single_category_cap: f32,
    #[serde(rename = "category")]
    categories: Vec<CategoryFile>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Levels {
    pub suspected: f32,
    pub high: f32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryFile {
    name: String,
    description: String,
    /// Strength of one matched pattern, 0..1; negative for cues of an honest call.
    weight: f32,
    #[serde(default)]
    standalone: bool,
    patterns: Vec<PatternEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PatternEntry {
    Plain(String),
    Weighted { pattern: String, weight: f32 },
}

#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    pub description: String,
    pub weight: f32,
    pub standalone: bool,
    pub patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
pub struct PhrasePack {
    pub language: String,
    pub max_gap: usize,
    pub levels: Levels,
    pub single_category_cap: f32,
    pub categories: Vec<Category>,
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct PackError {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

/// The packs shipped with the binary.
pub const BUILTIN_EN: &str = include_str!("../../models/phrases/en.toml");
pub const BUILTIN_ZH: &str = include_str!("../../models/phrases/zh.toml");

impl PhrasePack {
    pub fn load(path: &Path) -> Result<Self, PackError> {
        let text = std::fs::read_to_string(path).map_err(|e| PackError {
            file: path.display().to_string(),
            line: 0,
            problem: format!("cannot read: {e}"),
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, PackError> {
        let line_of = |needle: &str| {
            text.lines()
                .position(|l| l.contains(needle))
                .map_or(0, |i| i + 1)
        };
        let fail = |line: usize, problem: String| PackError {
            file: file.to_owned(),
            line,
            problem,
        };
        let raw: PackFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].lines().count().max(1)
            });
            fail(line, e.message().to_owned())
        })?;
        if !["en", "zh"].contains(&raw.language.as_str()) {
            return Err(fail(
                line_of("language"),
                format!("unsupported language {:?}", raw.language),
            ));
        }
        let l = raw.levels;
        if !(0.0 < l.suspected && l.suspected < l.high && l.high <= 1.0) {
            return Err(fail(
                line_of("suspected"),
                "levels need 0 < suspected < high <= 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&raw.single_category_cap) || raw.max_gap > 20 {
            return Err(fail(
                line_of("single_category_cap"),
                "single_category_cap must be in 0..1 and max_gap at most 20".into(),
            ));
        }
        let mut categories = Vec::new();
        let mut names = std::collections::HashSet::new();
        for c in raw.categories {
            if !names.insert(c.name.clone()) {
                return Err(fail(
                    line_of(&format!("\"{}\"", c.name)),
                    format!("category {:?} defined twice", c.name),
                ));
            }
            if !(-1.0..=1.0).contains(&c.weight) || c.weight == 0.0 {
                return Err(fail(
                    line_of(&c.name),
                    format!("category {}: weight must be in -1..1 and not 0", c.name),
                ));
            }
            if c.patterns.is_empty() {
                return Err(fail(
                    line_of(&c.name),
                    format!("category {} has no patterns", c.name),
                ));
            }
            let mut patterns = Vec::new();
            for p in c.patterns {
                let (source, weight) = match p {
                    PatternEntry::Plain(s) => (s, c.weight),
                    PatternEntry::Weighted { pattern, weight } => (pattern, weight),
                };
                if weight.abs() > 1.0 || weight == 0.0 || weight.signum() != c.weight.signum() {
                    return Err(fail(line_of(&source), format!("pattern {source:?}: weight {weight} must share the category's sign and be at most 1")));
                }
                let compiled = compile_pattern(&source, &raw.language, weight)
                    .map_err(|e| fail(line_of(&source), format!("pattern {source:?}: {e}")))?;
                patterns.push(compiled);
            }
            categories.push(Category {
                name: c.name,
                description: c.description,
                weight: c.weight,
                standalone: c.standalone,
                patterns,
            });
        }
        Ok(Self {
            language: raw.language,
            max_gap: raw.max_gap,
            levels: raw.levels,
            single_category_cap: raw.single_category_cap,
            categories,
            source: file.to_owned(),
        })
    }

    pub fn builtin(language: &str) -> Option<Self> {
        let (name, text) = match language {
            "en" => ("models/phrases/en.toml", BUILTIN_EN),
            "zh" => ("models/phrases/zh.toml", BUILTIN_ZH),
            _ => return None,
        };
        Some(Self::parse(name, text).expect("built-in packs are validated by tests"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_packs_load() {
        for lang in ["en", "zh"] {
            let p = PhrasePack::builtin(lang).unwrap();
            assert!(p.categories.len() >= 6, "{lang}");
        }
    }

    #[test]
    fn mistakes_name_file_and_line() {
        let bad = BUILTIN_EN.replacen("\"gift (card|cards)\"", "\"gift (card|cards\"", 1);
        let err = PhrasePack::parse("en.toml", &bad).unwrap_err();
        let line = bad
            .lines()
            .position(|l| l.contains("gift (card|cards\""))
            .unwrap()
            + 1;
        assert_eq!(err.line, line, "{err}");
        assert!(
            err.to_string().starts_with(&format!("en.toml:{line}:")),
            "{err}"
        );

        let err = PhrasePack::parse("x.toml", "language = \"en\"\nmax_gap = 2\nlevels = 3\n")
            .unwrap_err();
        assert_eq!(err.line, 3, "{err}");

        let hostile = BUILTIN_EN.replacen("high = ", "high = -", 1);
        assert!(PhrasePack::parse("en.toml", &hostile)
            .unwrap_err()
            .problem
            .contains("levels"));
    }
}
