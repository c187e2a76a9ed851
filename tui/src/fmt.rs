//! Short human-readable renderings of numbers, sizes, durations and clock times. Pure functions;
//! the view and the model's notices use them.

/// `12,345,678`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An age or a duration in milliseconds: `850ms`, `3.2s`, `2m05s`, `1h02m`.
pub fn age_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// A duration in microseconds: `85µs`, `1.25ms`, `3.2s`.
pub fn duration_us(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1000.0)
    } else {
        age_ms(us / 1000)
    }
}

/// A size in bytes: `512 B`, `1.4 KiB`, `3.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// A size in bytes in at most five characters: `512B`, `1.4K`, `3.0M`, `12G`.
pub fn bytes_short(n: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if n < 1000 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 999.5 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    if value < 9.95 {
        format!("{value:.1}{unit}")
    } else {
        format!("{value:.0}{unit}")
    }
}

/// The UTC time of day of a Unix timestamp in milliseconds: `14:03:27`.
pub fn clock_utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_numbers_sizes_and_times() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
        assert_eq!(age_ms(850), "850ms");
        assert_eq!(age_ms(3210), "3.2s");
        assert_eq!(age_ms(125_000), "2m05s");
        assert_eq!(age_ms(3_720_000), "1h02m");
        assert_eq!(duration_us(85), "85µs");
        assert_eq!(duration_us(1250), "1.25ms");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1434), "1.4 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(bytes_short(512), "512B");
        assert_eq!(bytes_short(1434), "1.4K");
        assert_eq!(bytes_short(200 * 1024), "200K");
        assert_eq!(bytes_short(3 * 1024 * 1024), "3.0M");
        assert_eq!(clock_utc(1_767_225_600_000 + 3_723_000), "01:02:03");
    }
}
