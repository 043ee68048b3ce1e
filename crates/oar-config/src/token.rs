//! Runner token helpers.

/// Length of the short token GitLab Runner derives from a runner token.
const SHORT_TOKEN_LEN: usize = 9;

/// The "short token" of a runner token (`CI_RUNNER_SHORT_TOKEN`, the log field, the pod name
/// part and the cache namespace).
///
/// Known prefixes are removed first: `glrtr-`, `glrt-`, `glcbt-`, or `GR` followed by seven hex
/// digits (legacy registration-token style), then a partition prefix `t<N>_`. The result is the
/// first nine characters of what remains (or all of it when shorter).
///
/// ```
/// assert_eq!(oar_config::short_token("glrt-t1_abcdefghijklmn"), "abcdefghi");
/// assert_eq!(oar_config::short_token("glrt-aaa_cccbbbdddooo2222"), "aaa_cccbb");
/// ```
pub fn short_token(token: &str) -> &str {
    let mut rest = token;
    for prefix in ["glrtr-", "glrt-", "glcbt-"] {
        if let Some(stripped) = rest.strip_prefix(prefix) {
            rest = stripped;
            break;
        }
    }
    if rest.len() == token.len() {
        rest = strip_legacy_prefix(rest);
    }
    rest = strip_partition_prefix(rest);
    let end = rest
        .char_indices()
        .nth(SHORT_TOKEN_LEN)
        .map_or(rest.len(), |(i, _)| i);
    rest.get(..end).unwrap_or(rest)
}

/// `GR1348941` + token: `GR` and seven hex digits.
fn strip_legacy_prefix(token: &str) -> &str {
    let Some(rest) = token.strip_prefix("GR") else {
        return token;
    };
    match rest.get(..7) {
        Some(hex) if hex.bytes().all(|b| b.is_ascii_hexdigit()) => rest.get(7..).unwrap_or(""),
        _ => token,
    }
}

/// `t1_` + token: a partition prefix.
fn strip_partition_prefix(token: &str) -> &str {
    let Some(rest) = token.strip_prefix('t') else {
        return token;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return token;
    }
    rest.get(digits..)
        .and_then(|r| r.strip_prefix('_'))
        .unwrap_or(token)
}

#[cfg(test)]
mod tests {
    use super::short_token;

    #[test]
    fn short_tokens() {
        let cases = [
            ("glrt-t1_abcdefghijklmn", "abcdefghi"),
            ("glrt-t12_abcdefghijklmn", "abcdefghi"),
            ("glrt-abcdefghijklmn", "abcdefghi"),
            ("glrt-aaa_cccbbbdddooo2222", "aaa_cccbb"),
            ("glrtr-abcdefghijklmn", "abcdefghi"),
            ("glcbt-abcdefghijklmn", "abcdefghi"),
            ("t3_abcdefghijklmn", "abcdefghi"),
            ("GR1348941abcdefghijklmn", "abcdefghi"),
            ("GRzzzzzzzabcdefghijklmn", "GRzzzzzzz"),
            ("GR13489", "GR13489"),
            ("tx_abcdefghijk", "tx_abcdef"),
            ("t1abcdefghijk", "t1abcdefg"),
            ("abcdefghijklmn", "abcdefghi"),
            ("abc", "abc"),
            ("glrt-", ""),
            ("", ""),
            ("glrt-ééééééééééé", "ééééééééé"),
        ];
        for (token, short) in cases {
            assert_eq!(short_token(token), short, "token {token:?}");
        }
    }
}
