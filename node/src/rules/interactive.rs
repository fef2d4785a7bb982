//! Interactive messages, as rules: what one offers now (its sender's updates applied), whether
//! it still takes answers, and whether an answer fits it. Pure: the caller passes the
//! messages and the time.

use kith_protocol::interactive::{
    Element, FieldKind, Interactive, InteractiveAnswer, InteractiveUpdate,
};

/// An interactive message as its sender's updates leave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Current {
    /// Its text.
    pub text: String,
    /// What it offers.
    pub element: Element,
    /// When it stops taking answers (ms), if ever.
    pub expires: Option<u64>,
    /// When its sender closed it (the closing update's sent time, ms).
    pub closed_at: Option<u64>,
}

impl Current {
    /// Whether it takes an answer made at `at` (ms): before it was closed and before it
    /// expires.
    pub fn open(&self, at: u64) -> bool {
        self.closed_at.is_none_or(|c| at < c) && self.expires.is_none_or(|e| at < e)
    }
}

/// `first` with its sender's updates applied in the order given, each with its sent time
/// (the caller sorts them by sent time, then id, and passes only those from the message's own
/// sender).
pub fn current<'a>(
    first: &Interactive,
    updates: impl IntoIterator<Item = (u64, &'a InteractiveUpdate)>,
) -> Current {
    let mut c = Current {
        text: first.text.clone(),
        element: first.element.clone(),
        expires: first.expires,
        closed_at: None,
    };
    for (at, u) in updates {
        if let Some(t) = &u.text {
            c.text = t.clone();
        }
        if let Some(e) = &u.element {
            c.element = e.clone();
        }
        if u.closed && c.closed_at.is_none() {
            c.closed_at = Some(at);
        }
    }
    c
}

/// Whether `answer` fits what `element` offers: the offered choices (one, or for a pick-many
/// list one or more, each once), or a form's fields (each known, required ones given, values
/// of their kind).
pub fn check_answer(element: &Element, answer: &InteractiveAnswer) -> Result<(), String> {
    let picked = |options: &[kith_protocol::interactive::Choice], many: bool| {
        if answer.choices.is_empty() || (!many && answer.choices.len() != 1) {
            return Err(if many { "pick one or more" } else { "pick exactly one" }.to_owned());
        }
        for (i, c) in answer.choices.iter().enumerate() {
            if !options.iter().any(|o| o.id == *c) {
                return Err(format!("{c:?} is not one of the choices"));
            }
            if answer.choices[..i].contains(c) {
                return Err(format!("{c:?} picked twice"));
            }
        }
        if !answer.fields.is_empty() {
            return Err("this message takes choices, not form fields".into());
        }
        Ok(())
    };
    match element {
        Element::Buttons(options) => picked(options, false),
        Element::Pick { many, options } => picked(options, *many),
        Element::Product(p) => picked(&p.options, false),
        Element::Form { fields, .. } => {
            if !answer.choices.is_empty() {
                return Err("a form takes field values, not choices".into());
            }
            for (i, (k, v)) in answer.fields.iter().enumerate() {
                let Some(f) = fields.iter().find(|f| f.key == *k) else {
                    return Err(format!("the form has no field {k:?}"));
                };
                if answer.fields[..i].iter().any(|(j, _)| j == k) {
                    return Err(format!("the field {k:?} twice"));
                }
                match &f.kind {
                    FieldKind::Text { max_len } if v.len() > usize::from(*max_len) => {
                        return Err(format!("{}: at most {max_len} bytes", f.label))
                    }
                    FieldKind::Number { min, max } => {
                        let n: i64 = v
                            .trim()
                            .parse()
                            .map_err(|_| format!("{}: {v:?} is not a whole number", f.label))?;
                        if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                            return Err(format!(
                                "{}: {n} is not within {} to {}",
                                f.label,
                                min.map_or("…".into(), |m| m.to_string()),
                                max.map_or("…".into(), |m| m.to_string())
                            ));
                        }
                    }
                    FieldKind::DateTime => {
                        chrono::DateTime::parse_from_rfc3339(v.trim()).map_err(|_| {
                            format!(
                                "{}: {v:?} is not a date and time (2027-06-12T18:00:00+02:00)",
                                f.label
                            )
                        })?;
                    }
                    FieldKind::Choice(options) if !options.iter().any(|o| o.id == *v) => {
                        return Err(format!("{}: {v:?} is not one of the choices", f.label))
                    }
                    _ => {}
                }
            }
            if let Some(f) = fields.iter().find(|f| {
                f.required
                    && !answer.fields.iter().any(|(k, v)| *k == f.key && !v.trim().is_empty())
            }) {
                return Err(format!("{} is required", f.label));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kith_protocol::interactive::{Choice, Field, Product};
    use kith_protocol::MessageId;

    fn c(id: &str) -> Choice {
        Choice { id: id.into(), label: id.to_uppercase() }
    }

    fn answer(choices: &[&str], fields: &[(&str, &str)]) -> InteractiveAnswer {
        InteractiveAnswer {
            to: MessageId([1; 16]),
            choices: choices.iter().map(|s| (*s).to_owned()).collect(),
            fields: fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    #[test]
    fn buttons_and_lists_take_offered_choices() {
        let b = Element::Buttons(vec![c("yes"), c("no")]);
        assert!(check_answer(&b, &answer(&["yes"], &[])).is_ok());
        assert!(check_answer(&b, &answer(&["maybe"], &[])).is_err());
        assert!(check_answer(&b, &answer(&["yes", "no"], &[])).is_err());
        let many = Element::Pick { many: true, options: vec![c("a"), c("b")] };
        assert!(check_answer(&many, &answer(&["a", "b"], &[])).is_ok());
        assert!(check_answer(&many, &answer(&["a", "a"], &[])).is_err());
        let product = Element::Product(Box::new(Product {
            title: "Margherita".into(),
            description: None,
            image: None,
            price: 950,
            currency: "EUR".into(),
            options: vec![c("add")],
        }));
        assert!(check_answer(&product, &answer(&["add"], &[])).is_ok());
        assert!(check_answer(&product, &answer(&[], &[("x", "y")])).is_err());
    }

    #[test]
    fn forms_check_each_field() {
        let f = |key: &str, kind, required| Field {
            key: key.into(),
            label: key.into(),
            kind,
            required,
        };
        let form = Element::Form {
            fields: vec![
                f("name", FieldKind::Text { max_len: 5 }, true),
                f("n", FieldKind::Number { min: Some(1), max: Some(9) }, false),
                f("at", FieldKind::DateTime, false),
                f("size", FieldKind::Choice(vec![c("s"), c("l")]), false),
            ],
            submit: "Order".into(),
        };
        let ok = answer(
            &[],
            &[("name", "Ann"), ("n", "2"), ("at", "2027-06-12T18:00:00+02:00"), ("size", "l")],
        );
        assert_eq!(check_answer(&form, &ok), Ok(()));
        for (bad, why) in [
            (answer(&[], &[("n", "2")]), "name is required"),
            (answer(&[], &[("name", "Annabel")]), "at most 5"),
            (answer(&[], &[("name", "A"), ("n", "10")]), "not within 1 to 9"),
            (answer(&[], &[("name", "A"), ("n", "two")]), "not a whole number"),
            (answer(&[], &[("name", "A"), ("at", "tomorrow")]), "not a date"),
            (answer(&[], &[("name", "A"), ("size", "xl")]), "not one of"),
            (answer(&[], &[("name", "A"), ("colour", "red")]), "no field"),
        ] {
            let got = check_answer(&form, &bad).expect_err(why);
            assert!(got.contains(why), "{got} should say {why}");
        }
    }

    #[test]
    fn updates_replace_and_close() {
        let first = Interactive {
            text: "Pick".into(),
            element: Element::Buttons(vec![c("a")]),
            expires: Some(100),
        };
        let u1 = InteractiveUpdate {
            to: MessageId([1; 16]),
            text: None,
            element: Some(Element::Buttons(vec![c("b")])),
            closed: false,
        };
        let u2 = InteractiveUpdate {
            to: MessageId([1; 16]),
            text: Some("Sold out".into()),
            element: None,
            closed: true,
        };
        let now = current(&first, [(10, &u1)]);
        assert_eq!(now.element, Element::Buttons(vec![c("b")]));
        assert!(now.open(99) && !now.open(100), "expires at its time");
        let closed = current(&first, [(10, &u1), (50, &u2)]);
        assert!(closed.open(49), "an answer made before it closed counts");
        assert!(!closed.open(50));
        assert_eq!(closed.text, "Sold out");
    }
}
