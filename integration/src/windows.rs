//! Rate-limit windows are aligned to the clock (a 60 s window ends on every minute, a
//! 3600 s one on every hour), so a test that counts tokens across several requests fails
//! if a window ends in the middle of it. Such tests first wait, when needed, until the
//! window they count in has enough time left.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long until the clock-aligned window of `window_secs` seconds that holds `now` ends.
pub fn left_in_window(now: Duration, window_secs: u64) -> Duration {
    let window = Duration::from_secs(window_secs.max(1));
    let into = Duration::from_nanos((now.as_nanos() % window.as_nanos()) as u64);
    window - into
}

/// Sleeps into the next window when the current one has less than `needed` left (or not
/// at all). Call it after Envoy is up and before the first request that is counted.
pub async fn clear_of_window_end(window_secs: u64, needed: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let left = left_in_window(now, window_secs);
    if left < needed {
        tokio::time::sleep(left + Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_is_counted_to_the_aligned_end() {
        assert_eq!(
            left_in_window(Duration::from_secs(3599), 3600),
            Duration::from_secs(1)
        );
        assert_eq!(
            left_in_window(Duration::from_millis(120_500), 60),
            Duration::from_millis(59_500)
        );
        assert_eq!(
            left_in_window(Duration::from_secs(7200), 3600),
            Duration::from_secs(3600)
        );
    }
}
