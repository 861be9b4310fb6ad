//! WebSocket media stream messages: Twilio-style JSON and Genesys AudioHook (text and binary).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vishguard::sources::audiohook::AudioHookSession;
use vishguard::sources::twilio::TwilioSession;
use vishguard::sources::MediaSession;

const OPEN: &str = r#"{"version":"2","type":"open","seq":1,"id":"s","parameters":{"conversationId":"c","media":[{"type":"audio","format":"PCMU","channels":["external","internal"],"rate":8000}]}}"#;
const START: &str = r#"{"event":"start","start":{"callSid":"CA1","tracks":["inbound","outbound"]}}"#;

fuzz_target!(|data: &[u8]| {
    let mut twilio = TwilioSession::new();
    let mut hook = AudioHookSession::new();
    let _ = twilio.text(START);
    let _ = hook.text(OPEN);
    // The input split at newlines into messages: text where it is UTF-8, else binary.
    for message in data.split(|&b| b == b'\n') {
        match std::str::from_utf8(message) {
            Ok(text) => {
                let _ = twilio.text(text);
                let _ = hook.text(text);
            }
            Err(_) => {
                let _ = twilio.binary(message);
                let _ = hook.binary(message);
            }
        }
    }
    let _ = twilio.finish();
    let _ = hook.finish();
});
