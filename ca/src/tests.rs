//! Unit tests for the CA: every refused CSR shape, and what an issued certificate holds.

use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

use crate::*;

fn cluster() -> ClusterName {
    ClusterName::new("weft").expect("valid")
}

fn node(n: &str) -> NodeName {
    NodeName::new(n).expect("valid")
}

fn ca() -> CertificateAuthority {
    CertificateAuthority::create(
        cluster(),
        SystemTime::now(),
        Duration::from_secs(86400 * 365),
    )
    .expect("root")
    .0
}

/// A CSR built by hand, as a hostile node could.
fn csr_with(key: &KeyPair, cn: Option<&str>, sans: Vec<SanType>, is_ca: IsCa) -> Vec<u8> {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        p.distinguished_name.push(DnType::CommonName, cn);
    }
    p.subject_alt_names = sans;
    p.is_ca = is_ca;
    p.serialize_request(key).expect("csr").der().to_vec()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().expect("ia5"))
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key")
}

fn sign(ca: &CertificateAuthority, der: &[u8], name: &str) -> Result<IssuedCert, CsrRefusal> {
    ca.sign_node_csr(
        der,
        &node(name),
        Duration::from_secs(3600),
        SystemTime::now(),
    )
}

#[test]
fn issues_only_ca_chosen_fields() {
    let ca = ca();
    let key = NodeKey::generate().expect("key");
    let id = SpiffeId::node(cluster(), node("vm-1"));
    let issued = sign(&ca, &key.csr_der(&id).expect("csr"), "vm-1").expect("signed");
    let root = TrustRoot::new(cluster(), ca.cert_der().to_vec()).expect("root");
    let info = root
        .verify_node(&issued.der, SystemTime::now())
        .expect("verifies");
    assert_eq!(info.id, id);
    assert_eq!(info.serial, issued.serial);
    assert_eq!(info.serial.len(), 32, "128-bit serial");
    assert!(info.lifetime() >= Duration::from_secs(3600));

    let (_, cert) = x509_parser::parse_x509_certificate(&issued.der).expect("parse");
    assert!(!cert.is_ca());
    let eku = cert
        .extended_key_usage()
        .expect("ok")
        .expect("present")
        .value;
    assert!(eku.server_auth && eku.client_auth && !eku.any);
    let san = cert
        .subject_alternative_name()
        .expect("ok")
        .expect("present");
    assert_eq!(san.value.general_names.len(), 1);

    // Expired certificates are refused by the verifier.
    let later = SystemTime::now() + Duration::from_secs(7200);
    assert!(matches!(
        root.verify_node(&issued.der, later),
        Err(VerifyError::Chain(_))
    ));
}

#[test]
fn serials_differ_for_the_same_key() {
    let ca = ca();
    let key = NodeKey::generate().expect("key");
    let csr = key
        .csr_der(&SpiffeId::node(cluster(), node("a")))
        .expect("csr");
    let a = sign(&ca, &csr, "a").expect("a");
    let b = sign(&ca, &csr, "a").expect("b");
    assert_ne!(a.serial, b.serial);
}

#[test]
fn csr_without_extensions_is_fine() {
    let ca = ca();
    let der = csr_with(&p256(), None, vec![], IsCa::NoCa);
    sign(&ca, &der, "vm-1").expect("signed");
}

#[test]
fn refuses_two_uri_sans() {
    let der = csr_with(
        &p256(),
        Some("vm-1"),
        vec![
            uri("spiffe://weft/node/vm-1"),
            uri("spiffe://weft/node/vm-2"),
        ],
        IsCa::NoCa,
    );
    assert!(matches!(
        sign(&ca(), &der, "vm-1"),
        Err(CsrRefusal::ExtraSan { .. })
    ));
}

#[test]
fn refuses_dns_san() {
    let der = csr_with(
        &p256(),
        Some("vm-1"),
        vec![
            uri("spiffe://weft/node/vm-1"),
            SanType::DnsName("evil.example".try_into().expect("ia5")),
        ],
        IsCa::NoCa,
    );
    assert!(matches!(
        sign(&ca(), &der, "vm-1"),
        Err(CsrRefusal::ExtraSan { .. })
    ));
}

#[test]
fn refuses_ca_bit() {
    let der = csr_with(
        &p256(),
        Some("vm-1"),
        vec![uri("spiffe://weft/node/vm-1")],
        IsCa::Ca(BasicConstraints::Unconstrained),
    );
    assert_eq!(
        sign(&ca(), &der, "vm-1").map(|_| ()),
        Err(CsrRefusal::AsksForCa)
    );
}

#[test]
fn refuses_another_nodes_name() {
    let key = NodeKey::generate().expect("key");
    let other = key
        .csr_der(&SpiffeId::node(cluster(), node("vm-2")))
        .expect("csr");
    assert!(matches!(
        sign(&ca(), &other, "vm-1"),
        Err(CsrRefusal::OtherName { .. })
    ));
    let san_only = csr_with(
        &p256(),
        None,
        vec![uri("spiffe://weft/node/vm-2")],
        IsCa::NoCa,
    );
    assert!(matches!(
        sign(&ca(), &san_only, "vm-1"),
        Err(CsrRefusal::ExtraSan { .. })
    ));
}

#[test]
fn refuses_foreign_trust_domain() {
    let der = csr_with(
        &p256(),
        Some("vm-1"),
        vec![uri("spiffe://other/node/vm-1")],
        IsCa::NoCa,
    );
    assert!(matches!(
        sign(&ca(), &der, "vm-1"),
        Err(CsrRefusal::ExtraSan { .. })
    ));
}

#[test]
fn refuses_tampered_signature() {
    let mut der = NodeKey::generate()
        .expect("key")
        .csr_der(&SpiffeId::node(cluster(), node("vm-1")))
        .expect("csr");
    let last = der.len() - 3;
    der[last] ^= 0x55;
    let r = sign(&ca(), &der, "vm-1");
    assert!(
        matches!(r, Err(CsrRefusal::BadSignature | CsrRefusal::Malformed(_))),
        "{r:?}"
    );
}

#[test]
fn refuses_other_key_types() {
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
    let der = csr_with(
        &ed,
        Some("vm-1"),
        vec![uri("spiffe://weft/node/vm-1")],
        IsCa::NoCa,
    );
    assert_eq!(
        sign(&ca(), &der, "vm-1").map(|_| ()),
        Err(CsrRefusal::KeyAlgorithm)
    );
}

#[test]
fn refuses_garbage_and_oversize() {
    assert!(matches!(
        sign(&ca(), b"not a csr", "vm-1"),
        Err(CsrRefusal::Malformed(_))
    ));
    assert!(matches!(
        sign(&ca(), &[0u8; 5000], "vm-1"),
        Err(CsrRefusal::TooLarge(5000))
    ));
}

#[test]
fn foreign_ca_certificate_is_refused() {
    let other = CertificateAuthority::create(
        ClusterName::new("other").expect("valid"),
        SystemTime::now(),
        Duration::from_secs(86400),
    )
    .expect("root")
    .0;
    let key = NodeKey::generate().expect("key");
    let id = SpiffeId::node(other.cluster().clone(), node("vm-1"));
    let issued = other
        .sign_node_csr(
            &key.csr_der(&id).expect("csr"),
            &node("vm-1"),
            Duration::from_secs(60),
            SystemTime::now(),
        )
        .expect("signed");
    let root = TrustRoot::new(cluster(), ca().cert_der().to_vec()).expect("root");
    assert!(matches!(
        root.verify_node(&issued.der, SystemTime::now()),
        Err(VerifyError::Chain(_))
    ));
}

#[test]
fn signatures_verify_with_the_certificate() {
    let ca = ca();
    let key = NodeKey::generate().expect("key");
    let id = SpiffeId::node(cluster(), node("vm-1"));
    let issued = sign(&ca, &key.csr_der(&id).expect("csr"), "vm-1").expect("signed");
    let sig = key.sign(b"hello").expect("sig");
    verify_signature(&issued.der, b"hello", &sig).expect("valid");
    assert_eq!(
        verify_signature(&issued.der, b"hellO", &sig),
        Err(VerifyError::Signature)
    );
    let root = TrustRoot::new(cluster(), ca.cert_der().to_vec()).expect("root");
    let ca_sig = ca.sign(b"crl").expect("sig");
    root.verify_ca_signature(b"crl", &ca_sig).expect("valid");
}

#[test]
fn ca_reloads_from_its_files() {
    let (ca, key) =
        CertificateAuthority::create(cluster(), SystemTime::now(), Duration::from_secs(86400))
            .expect("root");
    let reloaded = CertificateAuthority::load(
        cluster(),
        ca.cert_der(),
        NodeKey::from_pem(&key.to_pem()).expect("pem"),
    )
    .expect("load");
    let k = NodeKey::generate().expect("key");
    let issued = sign(
        &reloaded,
        &k.csr_der(&SpiffeId::node(cluster(), node("x")))
            .expect("csr"),
        "x",
    )
    .expect("ok");
    TrustRoot::new(cluster(), ca.cert_der().to_vec())
        .expect("root")
        .verify_node(&issued.der, SystemTime::now())
        .expect("chain to the original root");
}

/// A replica of `root` for node `name`: its intermediate (DER) and the authority it issues with.
fn replica(root: &CertificateAuthority, name: &str) -> (Vec<u8>, CertificateAuthority) {
    let key = NodeKey::generate().expect("key");
    let csr = key.replica_csr_der(&cluster(), &node(name)).expect("csr");
    let issued = root
        .sign_replica_csr(
            &csr,
            &node(name),
            Duration::from_secs(86400 * 90),
            SystemTime::now(),
        )
        .expect("intermediate");
    let authority = CertificateAuthority::load(cluster(), &issued.der, key).expect("loads");
    (issued.der, authority)
}

#[test]
fn a_replica_issues_leaves_that_chain_through_its_intermediate() {
    let root = ca();
    let trust = TrustRoot::new(cluster(), root.cert_der().to_vec()).expect("root");
    let (inter, replica_ca) = replica(&root, "vm-2");
    let key = NodeKey::generate().expect("key");
    let csr = key
        .csr_der(&SpiffeId::node(cluster(), node("vm-5")))
        .expect("csr");
    let leaf = sign(&replica_ca, &csr, "vm-5").expect("issued by the replica");
    let info = trust
        .verify_node_chain(&leaf.der, std::slice::from_ref(&inter), SystemTime::now())
        .expect("verifies through the intermediate");
    assert_eq!(info.id.node_name().as_str(), "vm-5");
    let issuer = info.issuer.expect("names its replica");
    assert_eq!(issuer.node.as_str(), "vm-2");
    assert!(
        trust.verify_node(&leaf.der, SystemTime::now()).is_err(),
        "without the intermediate the leaf does not chain"
    );
    // Another replica's intermediate offered with it: refused, not silently ignored.
    let (other, _) = replica(&root, "vm-3");
    assert!(trust
        .verify_node_chain(&leaf.der, &[other], SystemTime::now())
        .is_err());
    // A leaf of the root itself offered with an intermediate it does not go through.
    let direct = sign(&root, &csr, "vm-5").expect("root issues too");
    assert!(trust
        .verify_node_chain(&direct.der, std::slice::from_ref(&inter), SystemTime::now())
        .is_err());
    // The intermediate itself is never a node certificate.
    assert!(trust.verify_node(&inter, SystemTime::now()).is_err());
    // It cannot sign another CA below it (path length 0): webpki refuses such a chain.
    let sub_key = NodeKey::generate().expect("key");
    let sub_csr = sub_key
        .replica_csr_der(&cluster(), &node("vm-9"))
        .expect("csr");
    let sub = replica_ca
        .sign_replica_csr(
            &sub_csr,
            &node("vm-9"),
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .expect("rcgen signs it");
    let sub_ca = CertificateAuthority::load(cluster(), &sub.der, sub_key).expect("loads");
    let deep = sign(&sub_ca, &csr, "vm-5").expect("issued");
    assert!(trust
        .verify_node_chain(
            &deep.der,
            &[sub.der.clone(), inter.clone()],
            SystemTime::now()
        )
        .is_err());
}

#[test]
fn a_replica_csr_may_name_only_its_own_node() {
    let root = ca();
    let key = NodeKey::generate().expect("key");
    let csr = key.replica_csr_der(&cluster(), &node("vm-2")).expect("csr");
    assert!(root
        .sign_replica_csr(
            &csr,
            &node("vm-3"),
            Duration::from_secs(3600),
            SystemTime::now()
        )
        .is_err());
    // An intermediate of another cluster is refused even if signed by this root.
    let foreign = ClusterName::new("other").expect("valid");
    let fkey = NodeKey::generate().expect("key");
    let fcsr = fkey.replica_csr_der(&foreign, &node("vm-2")).expect("csr");
    let other_root = CertificateAuthority::create(
        foreign.clone(),
        SystemTime::now(),
        Duration::from_secs(3600),
    )
    .expect("root")
    .0;
    let finter = other_root
        .sign_replica_csr(
            &fcsr,
            &node("vm-2"),
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .expect("issued");
    assert!(matches!(
        parse_replica(&finter.der, &cluster()),
        Err(VerifyError::ForeignCluster { .. })
    ));
}
