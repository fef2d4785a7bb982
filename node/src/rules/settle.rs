//! Splitting bills: who owes whom after a conversation's expenses and payments, and the
//! transfers that settle it. Pure and exact: amounts are integers in minor units (cents), per
//! currency, with checked arithmetic; a split that does not add up, a negative or oversized
//! amount is an error, never a rounded guess.
//!
//! [`super::plan`] feeds it a conversation's `expense` and confirmed `payment` messages.

use std::collections::BTreeMap;

/// The largest amount of one expense or payment, in minor units (10^15: ten trillion euros).
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;
/// Most people one expense is split among.
pub const MAX_SPLIT: usize = 1024;

/// A user.
pub type User = [u8; 16];

/// How an expense is split among people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Split {
    /// In equal parts; a remainder of cents goes one each to the first people (by user id).
    Equal(Vec<User>),
    /// In proportion to whole shares (2 shares pay twice as much as 1); the cents the
    /// proportions leave over go to the largest remainders, ties by user id.
    Shares(Vec<(User, u32)>),
    /// Exact amounts, which must add up to the expense.
    Exact(Vec<(User, i64)>),
}

/// Someone paid for something, for some people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expense {
    /// Who paid.
    pub payer: User,
    /// ISO 4217 code.
    pub currency: String,
    /// How much, in minor units (more than 0).
    pub amount: i64,
    /// Among whom.
    pub split: Split,
}

/// A payment from one person to another, confirmed by the one paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// Who paid.
    pub from: User,
    /// Who was paid.
    pub to: User,
    /// ISO 4217 code.
    pub currency: String,
    /// How much, in minor units (more than 0).
    pub amount: i64,
}

/// Why a list of expenses cannot be counted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// An amount is 0, negative, or over [`MAX_AMOUNT`].
    #[error("an amount must be 1 to {MAX_AMOUNT} minor units, not {0}")]
    Amount(i64),
    /// Nobody to split among, too many, or someone twice, or a share of 0.
    #[error("a split needs 1 to {MAX_SPLIT} different people, each with a share")]
    Split,
    /// Exact amounts that do not add up to the expense.
    #[error("the exact amounts add up to {got}, not {want}")]
    Sum {
        /// Their sum.
        got: i128,
        /// The expense.
        want: i64,
    },
    /// Not a three-letter code.
    #[error("{0:?} is not an ISO 4217 currency code (three capital letters)")]
    Currency(String),
    /// A payment from someone to themselves.
    #[error("a payment must go to someone else")]
    SelfPayment,
}

/// Balances per currency: what each user is owed (positive) or owes (negative).
pub type Balances = BTreeMap<String, BTreeMap<User, i128>>;

fn amount(a: i64) -> Result<i64, SettleError> {
    if a <= 0 || a > MAX_AMOUNT {
        return Err(SettleError::Amount(a));
    }
    Ok(a)
}

fn currency(c: &str) -> Result<(), SettleError> {
    if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(SettleError::Currency(c.to_owned()));
    }
    Ok(())
}

/// Each person's part of an expense; the parts add up to `total`.
pub fn parts(total: i64, split: &Split) -> Result<Vec<(User, i64)>, SettleError> {
    let total = amount(total)?;
    let distinct = |users: &mut Vec<User>| {
        let n = users.len();
        users.sort_unstable();
        users.dedup();
        users.len() == n && (1..=MAX_SPLIT).contains(&n)
    };
    match split {
        Split::Equal(users) => {
            let mut users = users.clone();
            if !distinct(&mut users) {
                return Err(SettleError::Split);
            }
            let n = users.len() as i64;
            let (each, left) = (total / n, total % n);
            Ok(users
                .into_iter()
                .enumerate()
                .map(|(i, u)| (u, each + i64::from((i as i64) < left)))
                .collect())
        }
        Split::Shares(list) => {
            let mut users: Vec<User> = list.iter().map(|(u, _)| *u).collect();
            if !distinct(&mut users) || list.iter().any(|(_, s)| *s == 0) {
                return Err(SettleError::Split);
            }
            let mut list = list.clone();
            list.sort_unstable();
            let sum: i128 = list.iter().map(|(_, s)| i128::from(*s)).sum();
            // Floor of each proportional part, then one cent each to the largest remainders.
            let mut out: Vec<(User, i64, i128)> = list
                .iter()
                .map(|(u, s)| {
                    let exact = i128::from(total) * i128::from(*s);
                    (*u, (exact / sum) as i64, exact % sum)
                })
                .collect();
            let given: i64 = out.iter().map(|(_, a, _)| a).sum();
            let mut order: Vec<usize> = (0..out.len()).collect();
            order.sort_by(|a, b| out[*b].2.cmp(&out[*a].2).then(out[*a].0.cmp(&out[*b].0)));
            for i in order.into_iter().take((total - given) as usize) {
                out[i].1 += 1;
            }
            Ok(out.into_iter().map(|(u, a, _)| (u, a)).collect())
        }
        Split::Exact(list) => {
            let mut users: Vec<User> = list.iter().map(|(u, _)| *u).collect();
            if !distinct(&mut users) {
                return Err(SettleError::Split);
            }
            let mut got: i128 = 0;
            for (_, a) in list {
                if *a < 0 || *a > MAX_AMOUNT {
                    return Err(SettleError::Amount(*a));
                }
                got += i128::from(*a);
            }
            if got != i128::from(total) {
                return Err(SettleError::Sum { got, want: total });
            }
            Ok(list.clone())
        }
    }
}

/// The balances after `expenses` and confirmed `payments`, per currency. Each currency's
/// balances add up to 0.
pub fn balances(expenses: &[Expense], payments: &[Payment]) -> Result<Balances, SettleError> {
    let mut out = Balances::new();
    for e in expenses {
        currency(&e.currency)?;
        let book = out.entry(e.currency.clone()).or_default();
        *book.entry(e.payer).or_default() += i128::from(e.amount);
        for (user, part) in parts(e.amount, &e.split)? {
            *book.entry(user).or_default() -= i128::from(part);
        }
    }
    for p in payments {
        currency(&p.currency)?;
        amount(p.amount)?;
        if p.from == p.to {
            return Err(SettleError::SelfPayment);
        }
        let book = out.entry(p.currency.clone()).or_default();
        *book.entry(p.from).or_default() += i128::from(p.amount);
        *book.entry(p.to).or_default() -= i128::from(p.amount);
    }
    for book in out.values_mut() {
        book.retain(|_, b| *b != 0);
    }
    Ok(out)
}

/// Transfers (from, to, amount) that bring one currency's balances to 0: the largest debt pays
/// the largest credit until none is left. At most one fewer transfer than there are people
/// with a balance (the fewest possible is NP-hard in general; this is the usual greedy
/// answer, optimal whenever no group of people settles among itself).
pub fn settle(book: &BTreeMap<User, i128>) -> Vec<(User, User, i128)> {
    let mut owed: Vec<(User, i128)> =
        book.iter().filter(|(_, b)| **b > 0).map(|(u, b)| (*u, *b)).collect();
    let mut owing: Vec<(User, i128)> =
        book.iter().filter(|(_, b)| **b < 0).map(|(u, b)| (*u, -*b)).collect();
    let mut out = Vec::new();
    loop {
        owed.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        owing.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let (Some(to), Some(from)) = (owed.first_mut(), owing.first_mut()) else { break };
        let x = to.1.min(from.1);
        out.push((from.0, to.0, x));
        to.1 -= x;
        from.1 -= x;
        owed.retain(|(_, b)| *b > 0);
        owing.retain(|(_, b)| *b > 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: User = [1; 16];
    const B: User = [2; 16];
    const C: User = [3; 16];
    const D: User = [4; 16];

    fn expense(payer: User, currency: &str, amount: i64, split: Split) -> Expense {
        Expense { payer, currency: currency.into(), amount, split }
    }

    /// The barbecue: three expenses in two currencies, settled, then paid.
    #[test]
    fn the_barbecue_settles_to_zero() {
        let expenses = [
            expense(A, "EUR", 9_000, Split::Equal(vec![A, B, C])),
            expense(B, "EUR", 1_000, Split::Shares(vec![(A, 1), (B, 1), (C, 2)])),
            expense(C, "DKK", 10_000, Split::Exact(vec![(A, 5_000), (D, 5_000)])),
        ];
        let b = balances(&expenses, &[]).unwrap();
        assert_eq!(b["EUR"], BTreeMap::from([(A, 5_750), (B, -2_250), (C, -3_500)]));
        assert_eq!(b["DKK"], BTreeMap::from([(A, -5_000), (C, 10_000), (D, -5_000)]));
        let eur = settle(&b["EUR"]);
        assert_eq!(eur, vec![(C, A, 3_500), (B, A, 2_250)]);
        let payments: Vec<Payment> = eur
            .iter()
            .map(|(from, to, x)| Payment {
                from: *from,
                to: *to,
                currency: "EUR".into(),
                amount: *x as i64,
            })
            .chain(settle(&b["DKK"]).iter().map(|(from, to, x)| Payment {
                from: *from,
                to: *to,
                currency: "DKK".into(),
                amount: *x as i64,
            }))
            .collect();
        let after = balances(&expenses, &payments).unwrap();
        assert!(after.values().all(BTreeMap::is_empty), "{after:?}");
    }

    fn user() -> impl Strategy<Value = User> {
        (1u8..9).prop_map(|n| [n; 16])
    }

    fn split() -> impl Strategy<Value = (i64, Split)> {
        let users = || proptest::collection::btree_set(user(), 1..6);
        prop_oneof![
            (1..=MAX_AMOUNT, users()).prop_map(|(a, u)| (a, Split::Equal(u.into_iter().collect()))),
            (1..=MAX_AMOUNT, users(), proptest::collection::vec(1u32..1000, 6))
                .prop_map(|(a, u, s)| { (a, Split::Shares(u.into_iter().zip(s).collect())) }),
            (users(), proptest::collection::vec(0..=MAX_AMOUNT / 8, 6)).prop_map(|(u, amounts)| {
                let list: Vec<(User, i64)> = u.into_iter().zip(amounts).collect();
                let total: i64 = list.iter().map(|p| p.1).sum();
                // An exact split of nothing is no expense: give the first person a cent.
                let mut list = list;
                if total == 0 {
                    list[0].1 = 1;
                }
                (list.iter().map(|p| p.1).sum(), Split::Exact(list))
            }),
        ]
    }

    fn expenses() -> impl Strategy<Value = Vec<Expense>> {
        proptest::collection::vec(
            (user(), prop_oneof![Just("EUR"), Just("DKK"), Just("JPY")], split()),
            0..40,
        )
        .prop_map(|list| {
            list.into_iter()
                .map(|(payer, c, (amount, split))| Expense {
                    payer,
                    currency: c.into(),
                    amount,
                    split,
                })
                .collect()
        })
    }

    proptest! {
        /// The parts of an expense add up to it, and each is 0 or more.
        #[test]
        fn parts_add_up((total, split) in split()) {
            let parts = parts(total, &split).unwrap();
            prop_assert_eq!(parts.iter().map(|p| i128::from(p.1)).sum::<i128>(), i128::from(total));
            prop_assert!(parts.iter().all(|p| p.1 >= 0));
        }

        /// Balances sum to 0 per currency, and the proposed transfers settle every one of them,
        /// with fewer transfers than people in the book; amounts up to the limit never overflow.
        #[test]
        fn settling_brings_every_balance_to_zero(expenses in expenses()) {
            let b = balances(&expenses, &[]).unwrap();
            let mut payments = Vec::new();
            for (currency, book) in &b {
                prop_assert_eq!(book.values().sum::<i128>(), 0);
                let transfers = settle(book);
                prop_assert!(transfers.len() < book.len().max(1));
                for (from, to, x) in transfers {
                    prop_assert!(x > 0);
                    // A transfer over the limit of one payment is paid in several.
                    let mut left = x;
                    while left > 0 {
                        let part = left.min(i128::from(MAX_AMOUNT));
                        payments.push(Payment { from, to, currency: currency.clone(), amount: part as i64 });
                        left -= part;
                    }
                }
            }
            let after = balances(&expenses, &payments).unwrap();
            prop_assert!(after.values().all(BTreeMap::is_empty), "{:?}", after);
        }
    }

    #[test]
    fn cents_left_over_are_given_out_not_lost() {
        assert_eq!(
            parts(100, &Split::Equal(vec![C, A, B])).unwrap(),
            vec![(A, 34), (B, 33), (C, 33)]
        );
        let shares = parts(100, &Split::Shares(vec![(A, 1), (B, 1), (C, 1)])).unwrap();
        assert_eq!(shares.iter().map(|p| p.1).sum::<i64>(), 100);
    }

    #[test]
    fn what_does_not_add_up_is_refused() {
        assert_eq!(parts(0, &Split::Equal(vec![A])), Err(SettleError::Amount(0)));
        assert_eq!(parts(-5, &Split::Equal(vec![A])), Err(SettleError::Amount(-5)));
        assert_eq!(parts(10, &Split::Equal(vec![])), Err(SettleError::Split));
        assert_eq!(parts(10, &Split::Equal(vec![A, A])), Err(SettleError::Split));
        assert_eq!(parts(10, &Split::Shares(vec![(A, 0)])), Err(SettleError::Split));
        assert_eq!(
            parts(10, &Split::Exact(vec![(A, 4), (B, 5)])),
            Err(SettleError::Sum { got: 9, want: 10 })
        );
        let bad = expense(A, "eur", 10, Split::Equal(vec![A]));
        assert!(matches!(balances(&[bad], &[]), Err(SettleError::Currency(_))));
        let own = Payment { from: A, to: A, currency: "EUR".into(), amount: 1 };
        assert_eq!(balances(&[], &[own]), Err(SettleError::SelfPayment));
    }
}
