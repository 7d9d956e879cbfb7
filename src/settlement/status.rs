//! What the books say, account by account: balances, settlements, fees, open invoices and
//! payments in flight. Read from any [`Store`], including a read-only snapshot of a running
//! plugin's ([`EmbeddedStore::read_only_snapshot`](super::EmbeddedStore::read_only_snapshot)).

use std::collections::BTreeMap;

use super::store::{AccountBook, Store, StoreError};

/// One account's position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountStatus {
    /// The account (a client's name on a server; `peer` on a client).
    pub account: String,
    /// Its book (amounts in millisatoshis).
    pub book: AccountBook,
    /// Invoices of ours issued to it and not yet paid, cancelled or expired.
    pub open_invoices: u64,
    /// Payments to it whose outcome is not booked yet.
    pub payments_in_flight: u64,
}

/// Every account's position, sorted by name, and their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// One per account the books know.
    pub accounts: Vec<AccountStatus>,
}

impl Status {
    /// Reads `store`.
    pub fn of(store: &dyn Store) -> Result<Status, StoreError> {
        let mut accounts: BTreeMap<String, AccountStatus> = store
            .accounts()?
            .into_iter()
            .map(|(account, book)| {
                let status = AccountStatus {
                    account: account.clone(),
                    book,
                    ..AccountStatus::default()
                };
                (account, status)
            })
            .collect();
        fn entry<'a>(
            accounts: &'a mut BTreeMap<String, AccountStatus>,
            name: &str,
        ) -> &'a mut AccountStatus {
            accounts
                .entry(name.to_owned())
                .or_insert_with(|| AccountStatus {
                    account: name.to_owned(),
                    ..AccountStatus::default()
                })
        }
        for invoice in store.open_invoices(None)? {
            entry(&mut accounts, &invoice.account).open_invoices += 1;
        }
        for payment in store.open_payments()? {
            entry(&mut accounts, &payment.account).payments_in_flight += 1;
        }
        Ok(Status {
            accounts: accounts.into_values().collect(),
        })
    }

    /// The sum over every account (`account` is `"total"`); saturating, for display.
    pub fn total(&self) -> AccountStatus {
        let mut total = AccountStatus {
            account: "total".into(),
            ..AccountStatus::default()
        };
        for a in &self.accounts {
            let (t, b) = (&mut total.book, &a.book);
            t.receivable_msat = t.receivable_msat.saturating_add(b.receivable_msat);
            t.payable_msat = t.payable_msat.saturating_add(b.payable_msat);
            t.reserved_msat = t.reserved_msat.saturating_add(b.reserved_msat);
            t.paying_msat = t.paying_msat.saturating_add(b.paying_msat);
            t.paid_msat = t.paid_msat.saturating_add(b.paid_msat);
            t.fees_msat = t.fees_msat.saturating_add(b.fees_msat);
            t.payments = t.payments.saturating_add(b.payments);
            t.received_msat = t.received_msat.saturating_add(b.received_msat);
            t.receipts = t.receipts.saturating_add(b.receipts);
            total.open_invoices += a.open_invoices;
            total.payments_in_flight += a.payments_in_flight;
        }
        total
    }
}
