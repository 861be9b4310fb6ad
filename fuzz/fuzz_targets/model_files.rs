//! A CTranslate2 `model.bin` as the importer reads it (parse, shape, conversion to the
//! Hugging Face layout).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vishguard::model_store::ct2;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = ct2::parse(Path::new("model.bin"), data) {
        let _ = model.whisper_shape();
        let _ = model.to_hf_tensors();
    }
});
