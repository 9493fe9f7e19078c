//! Conditions scripted over time: "300 kbit for 10 s, then free".

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::conditions::Conditions;
use crate::error::{ParseError, ScheduleError};
use crate::units::{fmt_duration, parse_duration};

/// One timed step of a [`Schedule`].
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// How long the step lasts.
    pub duration: Duration,
    /// What the path does meanwhile.
    pub conditions: Conditions,
}

/// Conditions over time: timed steps one after the other from the start, then a last step
/// that lasts forever. Step `i` covers `[start_i, start_i + duration_i)` of elapsed time.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    timed: Vec<Step>,
    last: Conditions,
}

impl Schedule {
    /// The same conditions forever.
    pub fn constant(conditions: Conditions) -> Self {
        Self {
            timed: Vec::new(),
            last: conditions,
        }
    }

    /// `timed` steps in order, then `last` forever; every step's conditions must
    /// [validate](Conditions::validate).
    pub fn new(timed: Vec<Step>, last: Conditions) -> Result<Self, ScheduleError> {
        let all = timed.iter().map(|s| &s.conditions).chain([&last]);
        for (i, conditions) in all.enumerate() {
            conditions.validate().map_err(|e| ScheduleError::Step {
                step: i + 1,
                text: conditions.to_string(),
                source: ParseError::Invalid(e),
            })?;
        }
        Ok(Self { timed, last })
    }

    /// Parses a schedule. Steps are separated by newlines, `;` or the word `then`; `#`
    /// starts a comment. Each step is one of
    ///
    /// - `<duration> <conditions>` (the line form: `10s rate=300kbit`, `5s free`),
    /// - `<conditions> for <duration>` (the prose form: `300kbit for 10s`),
    /// - `<conditions>` (the last step only),
    ///
    /// where `<conditions>` is the comma form of [`Conditions`]' `FromStr`. The last step
    /// lasts forever, so its duration, if given, is not used; end with `free` to lift the
    /// impairment. Examples: `300kbit for 10s, then free`; a file with the lines
    /// `10s rate=300kbit`, `2s blackhole`, `free`. A bare conditions string is a
    /// one-step schedule.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let steps = split_steps(text);
        let Some((last_text, timed_texts)) = steps.split_last() else {
            return Err(ScheduleError::Empty);
        };
        let mut timed = Vec::with_capacity(timed_texts.len());
        for (i, text) in timed_texts.iter().enumerate() {
            let (duration, conditions) = parse_step(i + 1, text)?;
            let duration = duration.ok_or_else(|| ScheduleError::MissingDuration {
                step: i + 1,
                text: text.clone(),
            })?;
            timed.push(Step {
                duration,
                conditions,
            });
        }
        let (_, last) = parse_step(steps.len(), last_text)?;
        Ok(Self { timed, last })
    }

    /// The timed steps.
    pub fn timed(&self) -> &[Step] {
        &self.timed
    }

    /// The step that lasts forever after the timed ones.
    pub fn last(&self) -> &Conditions {
        &self.last
    }

    /// The conditions `elapsed` after the start.
    pub fn at(&self, elapsed: Duration) -> &Conditions {
        let mut end = Duration::ZERO;
        for step in &self.timed {
            end = end.saturating_add(step.duration);
            if elapsed < end {
                return &step.conditions;
            }
        }
        &self.last
    }

    /// The total duration of the timed steps (when the last step begins).
    pub fn timed_duration(&self) -> Duration {
        self.timed
            .iter()
            .fold(Duration::ZERO, |sum, s| sum.saturating_add(s.duration))
    }
}

impl From<Conditions> for Schedule {
    fn from(conditions: Conditions) -> Self {
        Self::constant(conditions)
    }
}

/// [`Schedule::parse`].
impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Renders the prose form, e.g. `rate=300kbit for 10s, then free`, which parses back.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.timed {
            write!(
                f,
                "{} for {}, then ",
                step.conditions,
                fmt_duration(step.duration)
            )?;
        }
        write!(f, "{}", self.last)
    }
}

/// The steps' texts, split at newlines, `;` and the word `then`, comments removed.
fn split_steps(text: &str) -> Vec<String> {
    let mut steps = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        for segment in line.split(';') {
            let mut words = Vec::new();
            for word in segment.split_whitespace() {
                if word.eq_ignore_ascii_case("then") {
                    push_step(&mut steps, &mut words);
                } else {
                    words.push(word);
                }
            }
            push_step(&mut steps, &mut words);
        }
    }
    steps
}

/// Ends the step made of `words`, if there is one (separating commas trimmed).
fn push_step(steps: &mut Vec<String>, words: &mut Vec<&str>) {
    let joined = words.join(" ");
    let step = joined.trim_matches(|c: char| c == ',' || c.is_whitespace());
    if !step.is_empty() {
        steps.push(step.to_owned());
    }
    words.clear();
}

/// One step's duration (if written) and conditions; `step` numbers it for errors.
fn parse_step(step: usize, text: &str) -> Result<(Option<Duration>, Conditions), ScheduleError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if let Some(pos) = words.iter().position(|w| w.eq_ignore_ascii_case("for")) {
        let token = words[pos + 1..].join(" ");
        let duration = parse_duration(token.trim_end_matches(','))
            .ok_or(ScheduleError::BadDuration { step, token })?;
        let conditions = parse_conditions(step, &words[..pos].join(" "))?;
        return Ok((Some(duration), conditions));
    }
    if let Some(duration) = words.first().and_then(|w| parse_duration(w)) {
        let conditions = parse_conditions(step, &words[1..].join(" "))?;
        return Ok((Some(duration), conditions));
    }
    Ok((None, parse_conditions(step, text)?))
}

fn parse_conditions(step: usize, text: &str) -> Result<Conditions, ScheduleError> {
    text.parse().map_err(|source| ScheduleError::Step {
        step,
        text: text.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn prose_form() {
        let s = Schedule::parse("300kbit for 10s, then free").expect("parses");
        assert_eq!(s.timed().len(), 1);
        assert_eq!(s.timed()[0].duration, secs(10));
        assert_eq!(s.timed()[0].conditions.rate, Some(300_000));
        assert!(s.last().is_free());
        assert_eq!(s.at(Duration::from_millis(9_999)).rate, Some(300_000));
        assert!(s.at(secs(10)).is_free());
        assert_eq!(s.timed_duration(), secs(10));
        let again = Schedule::parse(&s.to_string()).expect("rendering parses");
        assert_eq!(again, s);
        let multi =
            Schedule::parse("delay=40ms, jitter=10ms for 5s, then blackhole for 1s then free")
                .expect("parses");
        assert_eq!(multi.timed().len(), 2);
        assert_eq!(
            multi.timed()[0].conditions.jitter,
            Duration::from_millis(10)
        );
        assert!(multi.at(secs(5)).blackhole);
    }

    #[test]
    fn line_form_with_comments() {
        let text = "# a capped start\n10s rate=300kbit,queue=20\n\n2s blackhole  # outage\nfree\n";
        let s = Schedule::parse(text).expect("parses");
        assert_eq!(s.timed().len(), 2);
        assert_eq!(s.at(secs(0)).rate, Some(300_000));
        assert!(s.at(secs(11)).blackhole);
        assert!(s.at(secs(12)).is_free());
        assert!(s.at(secs(1_000_000)).is_free());
        let semi = Schedule::parse("1s loss=5%; 5s free").expect("parses");
        assert_eq!(semi.timed()[0].conditions.loss, 0.05);
        assert!(
            semi.last().is_free(),
            "the last step's duration is not used"
        );
    }

    #[test]
    fn errors_say_which_step() {
        let missing = Schedule::parse("rate=300kbit\nfree").expect_err("no duration");
        assert_eq!(
            missing.to_string(),
            "step 1 (`rate=300kbit`) has no duration; only the last step may omit it"
        );
        let bad = Schedule::parse("10s loss=5\nfree").expect_err("bad loss");
        assert_eq!(
            bad.to_string(),
            "step 1 (`loss=5`): `loss=5` needs a percentage like `loss=5%`"
        );
        let dur = Schedule::parse("300kbit for ten seconds, then free").expect_err("bad duration");
        assert!(
            matches!(dur, ScheduleError::BadDuration { step: 1, .. }),
            "{dur}"
        );
        assert!(matches!(
            Schedule::parse("# nothing\n"),
            Err(ScheduleError::Empty)
        ));
        let invalid = Schedule::new(
            vec![Step {
                duration: secs(1),
                conditions: Conditions {
                    loss: 2.0,
                    ..Conditions::free()
                },
            }],
            Conditions::free(),
        );
        assert!(matches!(invalid, Err(ScheduleError::Step { step: 1, .. })));
    }
}
