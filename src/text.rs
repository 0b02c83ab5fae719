//! Text helpers the rooms share.

/// Where `s` is cut to keep at most `max` bytes: the largest character boundary not past
/// `max` (`s.len()` when `s` is no longer). std's `floor_char_boundary` does this but is
/// stable only since Rust 1.91, above our `rust-version`.
pub fn floor_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_never_splits_a_character() {
        assert_eq!(floor_boundary("abc", 10), 3);
        assert_eq!(floor_boundary("abc", 2), 2);
        assert_eq!(floor_boundary("é", 1), 0);
        assert_eq!(floor_boundary("aé", 2), 1);
        assert_eq!(floor_boundary("", 0), 0);
    }
}
