//! The dev PKI: a throwaway CA and one certificate for `localhost` that
//! `swf dev --tls` and the tests use for every TLS link.

use std::path::{Path, PathBuf};

/// Files of a throwaway PKI: one CA and one certificate signed by it.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl DevPki {
    /// Reuses `dir/{ca.pem,node.pem,node.key}` when all exist, else
    /// generates a new CA (its key is not kept) and a certificate for
    /// `localhost`, `127.0.0.1` and `::1`, for server and client use.
    pub fn ensure(dir: &Path, ca_name: &str) -> anyhow::Result<DevPki> {
        let pki = DevPki {
            ca_cert: dir.join("ca.pem"),
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
        };
        if pki.ca_cert.exists() && pki.cert.exists() && pki.key.exists() {
            return Ok(pki);
        }
        std::fs::create_dir_all(dir)?;
        let (ca_pem, cert_pem, key_pem) = generate(ca_name)?;
        write_private(&pki.key, &key_pem)?;
        std::fs::write(&pki.cert, cert_pem)?;
        std::fs::write(&pki.ca_cert, ca_pem)?;
        Ok(pki)
    }
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

/// (CA PEM, leaf certificate PEM, leaf key PEM).
fn generate(ca_name: &str) -> anyhow::Result<(String, String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut leaf = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "singularity-workflow node");
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;
    Ok((ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem()))
}
