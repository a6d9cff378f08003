//! `keel` names a PostgreSQL store by its address, never with the URL's password: not
//! when the server cannot be reached, not when the URL does not parse, not when the
//! server refuses, and not in `--help`, whether the URL came in `--store`, `--db` or
//! `KEEL_STORE`.

use crate::common::keel_with_env;

const PASSWORD: &str = "s3cr3t-pw";

/// Nothing listens on port 1: the connection is refused at once.
const UNREACHABLE: &str = "postgres://postgres:s3cr3t-pw@127.0.0.1:1/test";

fn assert_no_password(what: &str, (code, out, err): &(i32, String, String)) {
    assert!(
        !out.contains(PASSWORD) && !err.contains(PASSWORD),
        "{what}: the password was printed (exit {code})\nstdout: {out}\nstderr: {err}"
    );
}

#[test]
fn an_unreachable_store_is_named_without_its_password() {
    for flag in ["--store", "--db"] {
        for json in [false, true] {
            let mut args = vec![flag, UNREACHABLE];
            if json {
                args.push("--json");
            }
            args.extend(["sagas", "list"]);
            let run = keel_with_env(&args, &[]);
            assert_no_password(&format!("{args:?}"), &run);
            let (code, _, err) = &run;
            assert_eq!(*code, 1, "{err}");
            assert!(
                err.contains("postgres://postgres@127.0.0.1:1/test") && err.contains("refused"),
                "the address and the cause are still shown: {err}"
            );
        }
    }
    let run = keel_with_env(&["dead-letters", "list"], &[("KEEL_STORE", UNREACHABLE)]);
    assert_no_password("KEEL_STORE", &run);
    assert_eq!(run.0, 1, "{}", run.2);
}

#[test]
fn a_malformed_url_is_refused_without_repeating_its_password() {
    for url in [
        "postgres://postgres:s3cr3t-pw@127.0.0.1:notaport/test",
        "postgresql://postgres:s3cr3t-pw@[::1/test",
        "postgres://postgres:s3cr3t-pw@127.0.0.1:5432/test?sslmode=sometimes",
        // A mistyped scheme: taken for a file name, which is not repeated either.
        "postgres:/postgres:s3cr3t-pw@127.0.0.1:5432/test",
    ] {
        let run = keel_with_env(&["--store", url, "sagas", "list"], &[]);
        assert_no_password(url, &run);
        let (code, _, err) = &run;
        assert_eq!(*code, 1, "{url}: {err}");
        assert!(
            err.contains("does not parse") || err.contains("does not exist"),
            "{url}: the cause is still shown: {err}"
        );
    }
}

#[test]
fn a_refusal_from_the_server_is_reported_without_the_password() {
    // Trust authentication accepts any password; the database does not exist. Without a
    // server on 5432 this is a refused connection, which must not show it either.
    let url = "postgres://postgres:s3cr3t-pw@127.0.0.1:5432/keel_cli_no_such_database";
    let run = keel_with_env(&["--store", url, "streams", "show", "x"], &[]);
    assert_no_password(url, &run);
    assert_eq!(run.0, 1, "{}", run.2);
}

#[test]
fn help_does_not_show_the_value_of_keel_store() {
    let run = keel_with_env(&["--help"], &[("KEEL_STORE", UNREACHABLE)]);
    assert_no_password("--help", &run);
    assert!(run.1.contains("KEEL_STORE"), "{}", run.1);
}
