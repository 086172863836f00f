//! The mutator's integration tests, one binary: the support kit and the suites it `mod`s.

mod concurrency;
mod crash;
mod damage;
mod escapes;
mod outcomes;
mod seam;
mod support;
