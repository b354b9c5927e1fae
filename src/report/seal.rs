//! A report's seal: a MAC over the whole file under a key derived from the repository's master
//! key (`MasterKey::report_mac`), written into the file itself as
//! `drctl-report-seal:v1:<repository id>:<mac>`. The MAC is computed over the file with the mac
//! written as zeros, so any edit anywhere (a status, a number, a byte of the charts) breaks it, and
//! only someone holding a key to the repository can make or check one.

/// Where a renderer puts the seal; [`seal`] fills it in.
pub const PLACEHOLDER: &str = "drctl-report-seal:v1:pending";
const PREFIX: &str = "drctl-report-seal:v1:";
const HEX: usize = 64;

/// `text` (holding [`PLACEHOLDER`] once) sealed for the repository `repo_id` with its `mac`.
pub fn seal(text: &str, repo_id: &str, mac: impl Fn(&[u8]) -> [u8; 32]) -> String {
    let zeros = "0".repeat(HEX);
    let unsealed = text.replacen(PLACEHOLDER, &format!("{PREFIX}{repo_id}:{zeros}"), 1);
    let mac = hex::encode(mac(unsealed.as_bytes()));
    let at = unsealed.rfind(&zeros).expect("the seal was just written");
    format!("{}{mac}{}", &unsealed[..at], &unsealed[at + HEX..])
}

/// The repository id a report names in its seal; `None` when it carries no seal.
pub fn repository_of(text: &str) -> Option<String> {
    let (id, _, _) = parse(text)?;
    Some(id.to_string())
}

/// Whether `text` carries a seal made with `mac` over exactly these bytes.
pub fn verify(text: &str, mac: impl Fn(&[u8]) -> [u8; 32]) -> Result<(), String> {
    let (_, stored, at) = parse(text).ok_or("the file carries no drctl report seal: it is not a report drctl wrote")?;
    let unsealed = format!("{}{}{}", &text[..at], "0".repeat(HEX), &text[at + HEX..]);
    let expected = blake3::Hash::from_bytes(mac(unsealed.as_bytes()));
    let found = blake3::Hash::from_hex(stored).map_err(|_| "the seal is damaged")?;
    // blake3::Hash compares in constant time.
    match expected == found {
        true => Ok(()),
        false => Err("the seal does not match the content: the report was edited after drctl wrote it".into()),
    }
}

/// The last seal in `text`: repository id, mac, and the byte offset of the mac.
fn parse(text: &str) -> Option<(&str, &str, usize)> {
    let start = text.rfind(PREFIX)? + PREFIX.len();
    let rest = text.get(start..)?;
    let (id, after) = rest.split_once(':')?;
    let mac = after.get(..HEX)?;
    let hex = |s: &str| s.len() == HEX && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id) && hex(mac)).then_some((id, mac, start + id.len() + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::MasterKey;

    #[test]
    fn a_sealed_text_verifies_and_any_edit_or_other_key_fails() {
        let key = MasterKey::generate();
        let mac = |d: &[u8]| key.report_mac(d);
        let id = "ab".repeat(32);
        let sealed = seal(&format!("status: PASS\n<!-- {PLACEHOLDER} -->\n"), &id, mac);
        assert!(!sealed.contains("pending"));
        assert_eq!(repository_of(&sealed), Some(id.clone()));
        verify(&sealed, mac).unwrap();
        assert!(verify(&sealed.replace("PASS", "FAIL"), mac).is_err());
        assert!(verify(&sealed.replace("status", "Status"), mac).is_err());
        let other = MasterKey::generate();
        assert!(verify(&sealed, |d: &[u8]| other.report_mac(d)).is_err());
        assert!(verify("no seal here", mac).is_err());
    }
}
