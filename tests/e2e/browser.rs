//! Headless Chromium for the stories, through the WebDriver client `mam bench phone` uses too;
//! screenshots go under `target/tmp/<shots>/`.

use std::path::PathBuf;

pub use mam::webdriver::Browser;

/// Chromium at this window size, or `None` when it is not installed (outside CI).
pub async fn start(width: u32, height: u32, shots: &str) -> Option<Browser> {
    start_with(width, height, shots, &[]).await
}

/// [`start`] with more Chromium flags.
pub async fn start_with(width: u32, height: u32, shots: &str, flags: &[String]) -> Option<Browser> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(shots);
    Browser::start_with(width, height, dir, flags).await
}
