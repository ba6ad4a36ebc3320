//! The text cleaning open_clip's tokenizer applies before BPE (`_clean_lower`):
//! `ftfy.fix_text`, `html.unescape` twice, white-space collapsing, then lower-casing.
//!
//! ftfy is hand-written here because no crate ports it. Every ftfy step that acts on
//! well-formed text is reproduced: HTML unescaping (repeated to a fixed point, as ftfy
//! loops, and only when the text has no `<`), C1 controls read as Windows-1252, Latin
//! ligatures, full-width characters, curly quotes, line breaks, terminal escapes, control
//! characters and NFC. Not reproduced: ftfy's heuristic mojibake repair (`fix_encoding`),
//! which only changes text that is already garbled UTF-8 (such as `Ã©`).

use unicode_normalization::UnicodeNormalization;

/// Clean a prompt exactly as open_clip's `SimpleTokenizer` does before tokenising.
pub fn clean_lower(text: &str) -> String {
    let text = fix_text(text);
    let text = html_unescape(&html_unescape(&text));
    collapse_whitespace(&text).to_lowercase()
}

/// `re.sub(r"\s+", " ", text).strip()` with Python's notion of white space.
fn collapse_whitespace(text: &str) -> String {
    let is_space = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    text.split(is_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The subset of `ftfy.fix_text` described in the module docs, looped to a fixed point.
pub fn fix_text(text: &str) -> String {
    let unescape = !text.contains('<');
    let mut text = text.to_string();
    // ftfy repeats its steps until nothing changes; bound it anyway.
    for _ in 0..16 {
        let before = text.clone();
        if unescape {
            text = unescape_entities(&text);
        }
        text = text.chars().map(fix_c1).collect();
        text = text.chars().flat_map(fix_char).collect();
        text = text.replace("\r\n", "\n");
        text = text
            .chars()
            .map(|c| {
                if matches!(c, '\r' | '\u{2028}' | '\u{2029}' | '\u{85}') {
                    '\n'
                } else {
                    c
                }
            })
            .collect();
        text = remove_terminal_escapes(&text);
        text.retain(|c| !is_control(c));
        text = text.nfc().collect();
        if text == before {
            break;
        }
    }
    text
}

/// ftfy's `unescape_html`: only complete entities `&#?[0-9A-Za-z]{1,24};` are decoded.
fn unescape_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let body = tail[1..].strip_prefix('#').unwrap_or(&tail[1..]);
        let len = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .count();
        let hash = usize::from(tail[1..].starts_with('#'));
        if (1..=24).contains(&len) && body[len..].starts_with(';') {
            let entity = &tail[..1 + hash + len + 1];
            match ftfy_entity(entity) {
                Some(decoded) => out.push_str(&decoded),
                // An unknown entity stays as it was written.
                None => out.push_str(entity),
            }
            rest = &tail[entity.len()..];
        } else {
            out.push('&');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// ftfy's table: the HTML5 entities written with `;`, plus upper-case spellings of the
/// lower-case ones (`&EACUTE;` → `É`); numeric references as Python's `html.unescape`.
fn ftfy_entity(entity: &str) -> Option<String> {
    if entity.starts_with("&#") {
        let decoded = html_unescape(entity);
        return (!decoded.contains(';')).then_some(decoded);
    }
    if let Some(v) = htmlize::ENTITIES.get(entity.as_bytes()) {
        return Some(String::from_utf8_lossy(v).into_owned());
    }
    let lower = entity.to_lowercase();
    if lower != entity
        && entity == entity.to_uppercase()
        && let Some(v) = htmlize::ENTITIES.get(lower.as_bytes())
    {
        return Some(String::from_utf8_lossy(v).to_uppercase());
    }
    None
}

/// Python's `html.unescape`, rule for rule: numeric references with or without `;`,
/// Python's replacements for invalid code points, and named references matched by the
/// longest HTML5 entity name that prefixes the text.
pub fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match charref(after) {
            Some((consumed, replacement)) => {
                out.push_str(&replacement);
                rest = &after[consumed..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One reference after `&`: bytes consumed and its replacement, or `None` for no match of
/// `#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?`.
fn charref(s: &str) -> Option<(usize, String)> {
    if let Some(num) = s.strip_prefix('#') {
        let (hex, digits) = match num.strip_prefix(['x', 'X']) {
            Some(h) => (true, h),
            None => (false, num),
        };
        let n = digits
            .chars()
            .take_while(|c| {
                if hex {
                    c.is_ascii_hexdigit()
                } else {
                    c.is_ascii_digit()
                }
            })
            .count();
        if n == 0 {
            return None;
        }
        let semi = usize::from(digits[n..].starts_with(';'));
        let value =
            u64::from_str_radix(&digits[..n], if hex { 16 } else { 10 }).unwrap_or(u64::MAX);
        let consumed = 1 + usize::from(hex) + n + semi;
        return Some((consumed, numeric_charref(value)));
    }
    let name: String = s
        .chars()
        .take_while(|c| !matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';'))
        .take(32)
        .collect();
    if name.is_empty() {
        return None;
    }
    let semi = s[name.len()..].starts_with(';');
    let full = if semi {
        format!("&{name};")
    } else {
        format!("&{name}")
    };
    let consumed = name.len() + usize::from(semi);
    if let Some(v) = htmlize::ENTITIES.get(full.as_bytes()) {
        return Some((consumed, String::from_utf8_lossy(v).into_owned()));
    }
    // The longest entity name (of at least two characters) that starts the text.
    let body = &full[1..];
    let ends: Vec<usize> = body.char_indices().map(|(i, _)| i).skip(2).collect();
    for &cut in ends.iter().rev() {
        if let Some(v) = htmlize::ENTITIES.get(format!("&{}", &body[..cut]).as_bytes()) {
            return Some((
                consumed,
                format!("{}{}", String::from_utf8_lossy(v), &body[cut..]),
            ));
        }
    }
    Some((consumed, full))
}

fn numeric_charref(n: u64) -> String {
    if n == 0 {
        return "\u{fffd}".into();
    }
    if n == 0x0d {
        return "\r".into();
    }
    if (0x80..=0x9f).contains(&n) {
        return fix_c1(char::from_u32(n as u32).unwrap_or('\u{fffd}')).to_string();
    }
    if (0xd800..=0xdfff).contains(&n) || n > 0x10ffff {
        return "\u{fffd}".into();
    }
    let invalid = matches!(n, 0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f..=0x9f | 0xfdd0..=0xfdef)
        || (n & 0xfffe) == 0xfffe;
    if invalid {
        String::new()
    } else {
        char::from_u32(n as u32)
            .map(String::from)
            .unwrap_or_default()
    }
}

/// C1 control characters decoded as Windows-1252 ("sloppy": undefined bytes stay).
fn fix_c1(c: char) -> char {
    const CP1252: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    match c as u32 {
        n @ 0x80..=0x9f => CP1252[(n - 0x80) as usize],
        _ => c,
    }
}

/// Ligatures, full-width forms and curly quotes, one character at a time.
fn fix_char(c: char) -> Vec<char> {
    let s: &str = match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        '\u{3000}' => " ",
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => "'",
        '\u{201c}'..='\u{201f}' => "\"",
        '\u{ff01}'..='\u{ffef}' => return c.to_string().nfkc().collect(),
        _ => return vec![c],
    };
    s.chars().collect()
}

/// `ESC [ (digits|;)* letter` sequences are dropped.
fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\u{1b}' && chars.get(i + 1) == Some(&'[') {
            let mut j = i + 2;
            while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == ';') {
                j += 1;
            }
            if j < chars.len() && chars[j].is_ascii_alphabetic() {
                i = j + 1;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// ftfy's `remove_control_chars` set.
fn is_control(c: char) -> bool {
    matches!(c as u32,
        0x00..=0x08 | 0x0b | 0x0e..=0x1f | 0x7f | 0x206a..=0x206f | 0xfeff | 0xfff9..=0xfffc)
}
