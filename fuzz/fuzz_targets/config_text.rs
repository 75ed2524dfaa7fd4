//! The text-format config files a server reads at start and on every poll: models.config,
//! BatchingParameters and SSLConfig. Any text gives a value or an error, never a panic.
#![no_main]

use candle_serving::config::ssl::SslSettings;
use candle_serving::config::{BatchingOptions, ModelsConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = ModelsConfig::from_text(text, std::path::Path::new("/models"), "fuzz") {
        for model in &config.models {
            assert!(!model.name.is_empty(), "a parsed model has a name");
        }
    }
    let _ = BatchingOptions::from_text(text, "fuzz");
    let _ = SslSettings::from_text(text, "fuzz");
});
