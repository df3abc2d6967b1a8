//! Which requests are mirrored traffic (the frontends pass the Host /
//! `:authority` and the `--shadow-header`; this is the one place that decides).

use crate::metrics::Traffic;

/// Whether a request is mirrored traffic: its Host / `:authority` host part
/// ends in `-shadow` (before any `:port`, case-insensitive), or it carries the
/// `--shadow-header` with a value other than empty, `0` or `false`. The
/// frontends pass the two strings; this is the one place that decides.
pub fn traffic_of(host: Option<&str>, shadow_header: Option<&str>) -> Traffic {
    let marked = shadow_header.is_some_and(|v| {
        let v = v.trim();
        !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
    });
    let shadow_host = host.is_some_and(|h| {
        let h = h.trim();
        // `[v6]:port` or `[v6]`: an address literal, never a shadow name.
        let name = if h.starts_with('[') {
            ""
        } else {
            h.rsplit_once(':')
                .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
                .map_or(h, |(name, _)| name)
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        name.len() >= 7 && name[name.len() - 7..].eq_ignore_ascii_case("-shadow")
    });
    if marked || shadow_host {
        Traffic::Shadow
    } else {
        Traffic::Production
    }
}

#[cfg(test)]
mod tests {
    use super::{Traffic, traffic_of};

    #[test]
    fn host_names_ending_in_shadow_are_mirrored() {
        let shadow = |h: &str| traffic_of(Some(h), None) == Traffic::Shadow;
        assert!(shadow("model-shadow"));
        assert!(shadow("model-shadow:8000"));
        assert!(shadow("Model-SHADOW:8000"));
        assert!(shadow("svc.ns-shadow"));
        assert!(shadow("model-shadow."));
        assert!(!shadow("model"));
        assert!(!shadow("model:8000"));
        assert!(!shadow("shadow"));
        assert!(!shadow("model-shadow.example.com"));
        assert!(!shadow("model-shadowed:8000"));
        assert!(!shadow("[::1]:8000"));
        assert!(!shadow("[::1]"));
        assert!(!shadow("127.0.0.1:8000"));
        assert!(!shadow(""));
        assert_eq!(traffic_of(None, None), Traffic::Production);
    }

    #[test]
    fn the_header_marks_unless_empty_zero_or_false() {
        let shadow = |v: &str| traffic_of(Some("localhost:8000"), Some(v)) == Traffic::Shadow;
        assert!(shadow("1"));
        assert!(shadow("true"));
        assert!(shadow("yes"));
        assert!(shadow("mirror"));
        assert!(!shadow(""));
        assert!(!shadow(" "));
        assert!(!shadow("0"));
        assert!(!shadow("false"));
        assert!(!shadow("FALSE"));
        assert!(traffic_of(Some("a-shadow"), Some("0")) == Traffic::Shadow);
    }
}
