//! Profiles start where the app starts: every sampled stack of a gunicorn worker begins with a score of
//! server frames (gunicorn's script `<module>`, its arbiter, the worker loop, `handle_request`) above the
//! WSGI call into the app. They are the same in every request and bury the view under them, so the views
//! fold them into one node, [`SERVER_FRAME`], and start the app's part at its WSGI entry (Flask's
//! `__call__`/`wsgi_app`, or whatever WSGI callable gunicorn calls); `full_stack` keeps them.

use super::tree::StackWeight;

/// The frame id of the folded server frames (stored frame ids are positive).
pub const SERVER_FRAME: i64 = -1;
/// How the folded node is labelled.
pub const SERVER_FUNCTION: &str = "[server]";
pub const SERVER_FILE: &str =
    "gunicorn's frames above the app, folded (--full-stack, ?full_stack=1)";

/// What a frame is, for trimming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The WSGI server's code (gunicorn's package or script).
    Server,
    /// The Flask app's WSGI entry (`Flask.__call__`, `Flask.wsgi_app`).
    AppEntry,
    Other,
}

/// The role of a frame from its file and function (`function` may be a qualified name, `Flask.__call__`).
pub fn role(file: &str, function: &str) -> Role {
    let name = function.rsplit('.').next().unwrap_or(function);
    if file.ends_with("flask/app.py") && matches!(name, "__call__" | "wsgi_app") {
        Role::AppEntry
    } else if file.contains("/gunicorn/") || file.ends_with("/bin/gunicorn") {
        Role::Server
    } else {
        Role::Other
    }
}

/// Where the app starts in `frames` (outermost first): after the last server frame above the first Flask
/// entry (so a WSGI middleware around the app stays in view), at the Flask entry when no server frame
/// is seen, after the last server frame when there is no Flask entry; 0 when nothing is known.
fn app_start(frames: &[i64], role: &impl Fn(i64) -> Role) -> usize {
    let entry = frames.iter().position(|&f| role(f) == Role::AppEntry);
    let above = frames
        .get(..entry.unwrap_or(frames.len()))
        .unwrap_or_default();
    match above.iter().rposition(|&f| role(f) == Role::Server) {
        Some(last_server) => last_server + 1,
        None => entry.unwrap_or(0),
    }
}

/// Replaces each stack's frames above the app by one [`SERVER_FRAME`]; stacks that never reached the app
/// (the worker reading a request, writing a response) become that frame alone. Stacks with nothing to
/// fold are left as they are.
pub fn fold_server(stacks: &mut [StackWeight], role: impl Fn(i64) -> Role) {
    for s in stacks {
        let start = app_start(&s.frames, &role);
        if start > 0 {
            s.frames.splice(..start, [SERVER_FRAME]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames 1-9 are gunicorn's, 10 `threading.py`, 20 `Flask.__call__`, 21 `Flask.wsgi_app`, 30+ the app.
    fn roles(f: i64) -> Role {
        match f {
            1..=9 => Role::Server,
            20 | 21 => Role::AppEntry,
            _ => Role::Other,
        }
    }

    fn check(frames: &[i64], expect: &[i64]) {
        let mut stacks = vec![StackWeight {
            request: 0,
            frames: frames.to_vec(),
            weight_ns: 1,
            samples: 1,
        }];
        fold_server(&mut stacks, roles);
        assert_eq!(stacks[0].frames, expect, "{frames:?}");
    }

    #[test]
    fn server_frames_fold_into_one_node() {
        // Sync worker: script, arbiter, worker loop, handle_request -> Flask -> view.
        check(
            &[1, 2, 3, 4, 20, 21, 30, 31],
            &[SERVER_FRAME, 20, 21, 30, 31],
        );
        // gthread: stdlib thread frames above gunicorn's fold too.
        check(&[10, 11, 5, 6, 20, 21, 30], &[SERVER_FRAME, 20, 21, 30]);
        // A WSGI middleware gunicorn calls before Flask stays visible.
        check(&[1, 2, 40, 20, 21, 30], &[SERVER_FRAME, 40, 20, 21, 30]);
        // The worker between requests or parsing one: the server node alone.
        check(&[1, 2, 3], &[SERVER_FRAME]);
        // Not Flask: after the server's frames.
        check(&[1, 2, 50, 51], &[SERVER_FRAME, 50, 51]);
        // Another server: from Flask's entry.
        check(&[60, 61, 20, 21, 30], &[SERVER_FRAME, 20, 21, 30]);
        // Nothing known (a stack truncated above the app): untouched.
        check(&[30, 31], &[30, 31]);
        check(&[], &[]);
        // gunicorn frames below the app (the app calls into gunicorn) do not move the start.
        check(&[1, 20, 30, 2, 31], &[SERVER_FRAME, 20, 30, 2, 31]);
    }

    #[test]
    fn roles_from_names() {
        for (file, function, expect) in [
            (
                "/venv/lib/python3.11/site-packages/flask/app.py",
                "__call__",
                Role::AppEntry,
            ),
            (
                "/venv/lib/python3.12/site-packages/flask/app.py",
                "Flask.wsgi_app",
                Role::AppEntry,
            ),
            (
                "/venv/lib/python3.12/site-packages/flask/app.py",
                "full_dispatch_request",
                Role::Other,
            ),
            (
                "/venv/lib/python3.11/site-packages/gunicorn/workers/sync.py",
                "handle_request",
                Role::Server,
            ),
            ("/venv/bin/gunicorn", "<module>", Role::Server),
            ("/srv/app/app.py", "__call__", Role::Other),
        ] {
            assert_eq!(role(file, function), expect, "{file} {function}");
        }
    }
}
