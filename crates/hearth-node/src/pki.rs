//! `hearth init-pki` and `hearth token`: the cluster's small CA, node certificates and client
//! tokens, as files in one directory.
//!
//! ```text
//! pki/ca.pem  ca.key (0600)          the cluster CA (keep ca.key off the nodes if you can)
//! pki/node-1.pem  node-1.key (0600)  one pair per node: DNS names node-1.hearth and hearth
//! pki/tokens.toml                    SHA-256 of each client token (copy to every node)
//! pki/admin.token (0600)             the first admin token (the only copy of the secret)
//! ```
//!
//! Running it again reuses the CA and the existing files; it issues what is missing
//! (`--node 4` for a new node), and `--renew` re-issues the named nodes' certificates (rotation:
//! copy the new pair to the node, restart it; peers accept it at once, the CA is the same).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::auth::{ClientRole, TokenEntry, TokensFile, token_hash};
/// The name every node certificate is valid for (besides `node-N.hearth`): what a client
/// checks a node's certificate against.
pub use hearth_cluster::tls::CLUSTER_NAME;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Tokens(#[from] crate::auth::AuthError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PkiError {
    let path = path.to_path_buf();
    move |source| PkiError::Io { what, path, source }
}

/// Creates `dir` readable by its owner only (0700).
pub fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    hearth_store::private::create_dir(dir).map_err(io("cannot create", dir))
}

/// Writes `data` to `path`, readable by its owner only (0600).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    write_file(path, data, 0o600)
}

/// Writes `data` to `path` with `mode`, through a temporary file and a rename.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(mode);
        }
        let mut f = o.open(&tmp).map_err(io("cannot write", &tmp))?;
        f.write_all(data).map_err(io("cannot write", &tmp))?;
        f.sync_all().map_err(io("cannot write", &tmp))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(io("cannot set the mode of", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io("cannot write", path))?;
    Ok(())
}

fn years_from_now(years: i32) -> time::OffsetDateTime {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let year = 1970 + (now / 31_556_952) as i32;
    rcgen::date_time_ymd(year + years, 1, 1)
}

/// A random token: `hth_` and 32 random bytes in hex.
pub fn new_token() -> Result<String, PkiError> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| PkiError::Usage(format!("no randomness: {e}")))?;
    Ok(format!("hth_{}", hex::encode(b)))
}

struct Ca {
    cert_pem: String,
    key: KeyPair,
}

fn load_or_make_ca(dir: &Path) -> Result<(Ca, bool), PkiError> {
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    if cert_path.exists() {
        let cert_pem =
            std::fs::read_to_string(&cert_path).map_err(io("cannot read", &cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(
            "the CA exists but new certificates need its key; cannot read",
            &key_path,
        ))?;
        let key = KeyPair::from_pem(&key_pem)?;
        return Ok((Ca { cert_pem, key }, false));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    let mut tag = [0u8; 4];
    getrandom::getrandom(&mut tag).map_err(|e| PkiError::Usage(format!("no randomness: {e}")))?;
    dn.push(
        DnType::CommonName,
        format!("Hearth cluster CA {}", hex::encode(tag)),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = years_from_now(-1);
    params.not_after = years_from_now(20);
    let cert = params.self_signed(&key)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((
        Ca {
            cert_pem: cert.pem(),
            key,
        },
        true,
    ))
}

fn issue_node(dir: &Path, ca: &Ca, id: u64) -> Result<(), PkiError> {
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, &ca.key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        hearth_cluster::tls::node_name(id),
        hearth_cluster::tls::CLUSTER_NAME.to_string(),
    ])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("hearth node {id}"));
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = years_from_now(-1);
    params.not_after = years_from_now(5);
    let cert = params.signed_by(&key, &issuer)?;
    write_file(
        &dir.join(format!("node-{id}.key")),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_file(
        &dir.join(format!("node-{id}.pem")),
        cert.pem().as_bytes(),
        0o644,
    )?;
    Ok(())
}

/// What `init_pki` did, for the report.
pub struct PkiReport {
    pub created_ca: bool,
    pub issued: Vec<u64>,
    pub kept: Vec<u64>,
    pub admin_token: Option<PathBuf>,
}

/// Creates (or extends) the PKI directory.
pub fn init_pki(dir: &Path, nodes: &[u64], renew: bool) -> Result<PkiReport, PkiError> {
    if nodes.is_empty() {
        return Err(PkiError::Usage(
            "name the nodes: --node 1 --node 2 --node 3".into(),
        ));
    }
    if nodes.contains(&0) {
        return Err(PkiError::Usage("node id 0 is reserved".into()));
    }
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    let (ca, created_ca) = load_or_make_ca(dir)?;
    let mut report = PkiReport {
        created_ca,
        issued: vec![],
        kept: vec![],
        admin_token: None,
    };
    for &id in nodes {
        if dir.join(format!("node-{id}.pem")).exists() && !renew {
            report.kept.push(id);
            continue;
        }
        issue_node(dir, &ca, id)?;
        report.issued.push(id);
    }
    let tokens = dir.join("tokens.toml");
    if !tokens.exists() {
        let token = new_token()?;
        let file = TokensFile {
            token: vec![TokenEntry {
                name: "admin".into(),
                role: ClientRole::Admin,
                sha256: token_hash(&token),
                emergency: None,
                classes: None,
                locations: None,
            }],
        };
        let admin = dir.join("admin.token");
        write_file(&admin, format!("{token}\n").as_bytes(), 0o600)?;
        write_file(&tokens, file.render().as_bytes(), 0o644)?;
        report.admin_token = Some(admin);
    }
    Ok(report)
}

/// Adds a token to a tokens file; returns the secret (shown once, never stored).
pub fn add_token(file: &Path, name: &str, role: ClientRole) -> Result<String, PkiError> {
    add_token_with(file, name, role, TokenLimits::default())
}

/// What a new token's holder may ask for in intents (`hearth token add --emergency
/// --class C --location L`); absent fields keep the role's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenLimits {
    pub emergency: Option<bool>,
    pub classes: Option<Vec<String>>,
    pub locations: Option<Vec<String>>,
}

/// [`add_token`] with limits on what the holder may ask for.
pub fn add_token_with(
    file: &Path,
    name: &str,
    role: ClientRole,
    limits: TokenLimits,
) -> Result<String, PkiError> {
    let mut f = if file.exists() {
        TokensFile::load(file)?
    } else {
        TokensFile::default()
    };
    if f.token.iter().any(|t| t.name == name) {
        return Err(PkiError::Usage(format!(
            "a token named {name:?} exists; revoke it first (`hearth token revoke`)"
        )));
    }
    let token = new_token()?;
    f.token.push(TokenEntry {
        name: name.to_string(),
        role,
        sha256: token_hash(&token),
        emergency: limits.emergency,
        classes: limits.classes,
        locations: limits.locations,
    });
    let text = f.render();
    TokensFile::parse(&text).map_err(PkiError::Usage)?;
    write_file(file, text.as_bytes(), 0o644)?;
    Ok(token)
}

pub fn revoke_token(file: &Path, name: &str) -> Result<(), PkiError> {
    let mut f = TokensFile::load(file)?;
    let before = f.token.len();
    f.token.retain(|t| t.name != name);
    if f.token.len() == before {
        return Err(PkiError::Usage(format!(
            "no token named {name:?} in {}",
            file.display()
        )));
    }
    write_file(file, f.render().as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_cluster::tls::{Security, TlsFiles};

    #[test]
    fn pki_issues_node_certificates_that_load_and_name_their_node() {
        let d = tempfile::tempdir().unwrap();
        let r = init_pki(d.path(), &[1, 2], false).unwrap();
        assert!(r.created_ca);
        assert_eq!(r.issued, vec![1, 2]);
        let files = |id: u64| TlsFiles {
            ca: d.path().join("ca.pem").display().to_string(),
            cert: d
                .path()
                .join(format!("node-{id}.pem"))
                .display()
                .to_string(),
            key: d
                .path()
                .join(format!("node-{id}.key"))
                .display()
                .to_string(),
        };
        Security::load(1, &files(1)).unwrap();
        // Node 2's certificate does not prove node 1.
        let e = Security::load(1, &files(2)).unwrap_err().to_string();
        assert!(e.contains("node-1.hearth"), "{e}");
        // Again: the CA is kept, node 3 is new, 1 and 2 are kept.
        let ca_before = std::fs::read(d.path().join("ca.pem")).unwrap();
        let r = init_pki(d.path(), &[1, 2, 3], false).unwrap();
        assert!(!r.created_ca && r.issued == vec![3] && r.kept == vec![1, 2]);
        assert_eq!(std::fs::read(d.path().join("ca.pem")).unwrap(), ca_before);
        Security::load(3, &files(3)).unwrap();
        // A key readable by others is refused.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                d.path().join("node-3.key"),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
            let e = Security::load(3, &files(3)).unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{e}");
        }
        // The admin token's hash is in the tokens file; the token itself is not.
        let token = std::fs::read_to_string(d.path().join("admin.token")).unwrap();
        let tokens = std::fs::read_to_string(d.path().join("tokens.toml")).unwrap();
        assert!(tokens.contains(&token_hash(token.trim())));
        assert!(!tokens.contains(token.trim()));
        let t = add_token(&d.path().join("tokens.toml"), "ana", ClientRole::Agent).unwrap();
        assert!(add_token(&d.path().join("tokens.toml"), "ana", ClientRole::Agent).is_err());
        let f = TokensFile::load(&d.path().join("tokens.toml")).unwrap();
        assert_eq!(f.token.len(), 2);
        assert_eq!(f.token[1].sha256, token_hash(&t));
        revoke_token(&d.path().join("tokens.toml"), "ana").unwrap();
        assert_eq!(
            TokensFile::load(&d.path().join("tokens.toml"))
                .unwrap()
                .token
                .len(),
            1
        );
    }
}
