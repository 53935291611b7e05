//! Front-end (nginx, lighttpd, Apache) harness helpers.
