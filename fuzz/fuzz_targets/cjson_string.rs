//! cjson_string: valid JSON that reads back as the input (for UTF-8 input), and the
//! `body_data` wrapper is a JSON object around it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nginx_kafka_fuzz::escape::cjson_string;
use nginx_kafka_fuzz::record::ValueFormat;

fuzz_target!(|data: &[u8]| {
    let mut json = Vec::new();
    cjson_string(data, &mut json);

    assert!(json.len() >= 2 && json[0] == b'"' && json[json.len() - 1] == b'"');
    assert!(
        !json.iter().any(|&b| b < 0x20 || b == 0x7f),
        "no raw control bytes or DEL"
    );
    assert!(
        json.iter().filter(|&&b| b >= 0x80).count() == data.iter().filter(|&&b| b >= 0x80).count(),
        "bytes >= 0x80 pass through as they are"
    );

    let value = ValueFormat::BodyData.value(data);
    assert_eq!(&value[..13], b"{\"body_data\":");
    assert_eq!(&value[13..value.len() - 1], &json[..]);
    assert_eq!(value.last(), Some(&b'}'));
    assert_eq!(&*ValueFormat::Raw.value(data), data);

    if let Ok(text) = std::str::from_utf8(data) {
        let back: String = serde_json::from_slice(&json).expect("valid JSON string");
        assert_eq!(back, text, "JSON string reads back as the input");
        let object: serde_json::Value = serde_json::from_slice(&value).expect("valid JSON object");
        assert_eq!(object["body_data"].as_str(), Some(text));
    }
});
