-- Default reference data for a property & casualty insurer: the chart of
-- accounts, currencies with their ISO 4217 minor units, lines of business, and
-- posting rules giving every transaction type three journal entries of three lines.

INSERT INTO gl.account (account_code, name, account_type) VALUES
    ('1000', 'Cash and cash equivalents',              'ASSET'),
    ('1200', 'Premiums receivable',                    'ASSET'),
    ('1300', 'Reinsurance recoverable on paid losses', 'ASSET'),
    ('1400', 'Deferred acquisition costs',             'ASSET'),
    ('2100', 'Unearned premium reserve',               'LIABILITY'),
    ('2200', 'Loss and LAE reserves',                  'LIABILITY'),
    ('2300', 'Premium tax payable',                    'LIABILITY'),
    ('2400', 'Commissions payable',                    'LIABILITY'),
    ('2500', 'Reinsurance premiums payable',           'LIABILITY'),
    ('3000', 'Retained earnings',                      'EQUITY'),
    ('4000', 'Earned premium',                         'REVENUE'),
    ('4100', 'Ceded premium',                          'REVENUE'),
    ('5000', 'Losses paid',                            'EXPENSE'),
    ('5100', 'Loss adjustment expense',                'EXPENSE'),
    ('5200', 'Commission expense',                     'EXPENSE'),
    ('5300', 'Premium tax expense',                    'EXPENSE');

INSERT INTO gl.currency (code, name, minor_units) VALUES
    ('USD', 'US dollar',       2),
    ('EUR', 'Euro',            2),
    ('GBP', 'Pound sterling',  2),
    ('CAD', 'Canadian dollar', 2),
    ('JPY', 'Japanese yen',    0),
    ('BHD', 'Bahraini dinar',  3);

INSERT INTO gl.setting (functional_currency) VALUES ('USD');

INSERT INTO gl.line_of_business (code, name) VALUES
    ('AUTO',     'Private passenger auto'),
    ('HOME',     'Homeowners'),
    ('COMMPROP', 'Commercial property'),
    ('GENLIAB',  'General liability'),
    ('WORKCOMP', 'Workers compensation'),
    ('MARINE',   'Marine');

-- Templates: (source type, transaction type, entry) -> description.
INSERT INTO gl.journal_template (source_type, txn_type, je_seq, description) VALUES
    ('PREMIUM', 'NEW_BUSINESS', 1, 'Premium written'),
    ('PREMIUM', 'NEW_BUSINESS', 2, 'Commission on written premium'),
    ('PREMIUM', 'NEW_BUSINESS', 3, 'Premium earned'),
    ('PREMIUM', 'RENEWAL',      1, 'Premium written'),
    ('PREMIUM', 'RENEWAL',      2, 'Commission on written premium'),
    ('PREMIUM', 'RENEWAL',      3, 'Premium earned'),
    ('PREMIUM', 'ENDORSEMENT',  1, 'Additional premium written'),
    ('PREMIUM', 'ENDORSEMENT',  2, 'Commission on additional premium'),
    ('PREMIUM', 'ENDORSEMENT',  3, 'Premium earned'),
    ('PREMIUM', 'CANCELLATION', 1, 'Return premium'),
    ('PREMIUM', 'CANCELLATION', 2, 'Commission returned'),
    ('PREMIUM', 'CANCELLATION', 3, 'Unearned premium released'),
    ('CLAIM',   'LOSS_PAYMENT', 1, 'Loss paid'),
    ('CLAIM',   'LOSS_PAYMENT', 2, 'Reinsurance recovery on loss'),
    ('CLAIM',   'LOSS_PAYMENT', 3, 'Loss reserve takedown'),
    ('CLAIM',   'EXPENSE_PAYMENT', 1, 'Adjustment expense paid'),
    ('CLAIM',   'EXPENSE_PAYMENT', 2, 'Reinsurance recovery on expense'),
    ('CLAIM',   'EXPENSE_PAYMENT', 3, 'Reserve takedown for expense'),
    ('CLAIM',   'RECOVERY',     1, 'Salvage and subrogation received'),
    ('CLAIM',   'RECOVERY',     2, 'Reinsurance share of recovery'),
    ('CLAIM',   'RECOVERY',     3, 'Reserve adjustment for recovery');

-- Lines: ratio is a fraction of the source amount; NULL marks the balancing line.
INSERT INTO gl.posting_rule (source_type, txn_type, je_seq, line_no, account_code, side, ratio)
SELECT 'PREMIUM', t.txn_type, r.je_seq, r.line_no, r.account_code, r.side, r.ratio
FROM (VALUES ('NEW_BUSINESS'), ('RENEWAL'), ('ENDORSEMENT')) AS t (txn_type)
CROSS JOIN (VALUES
    (1, 1, '1200', 'D', 1.0),      -- receivable for the gross premium
    (1, 2, '2300', 'C', 0.03),     -- premium tax
    (1, 3, '2100', 'C', NULL),     -- the rest is unearned
    (2, 1, '5200', 'D', 0.15),     -- commission expense
    (2, 2, '1400', 'D', 0.02),     -- acquisition costs deferred
    (2, 3, '2400', 'C', NULL),     -- payable to the broker
    (3, 1, '2100', 'D', 1 / 12.0), -- one month earned
    (3, 2, '5300', 'D', 0.0025),   -- premium tax expensed
    (3, 3, '4000', 'C', NULL)
) AS r (je_seq, line_no, account_code, side, ratio);

INSERT INTO gl.posting_rule (source_type, txn_type, je_seq, line_no, account_code, side, ratio)
VALUES
    ('PREMIUM', 'CANCELLATION', 1, 1, '2100', 'D', NULL),
    ('PREMIUM', 'CANCELLATION', 1, 2, '2300', 'D', 0.03),
    ('PREMIUM', 'CANCELLATION', 1, 3, '1200', 'C', 1.0),
    ('PREMIUM', 'CANCELLATION', 2, 1, '2400', 'D', 0.15),
    ('PREMIUM', 'CANCELLATION', 2, 2, '1400', 'C', 0.02),
    ('PREMIUM', 'CANCELLATION', 2, 3, '5200', 'C', NULL),
    ('PREMIUM', 'CANCELLATION', 3, 1, '2100', 'D', 0.5),
    ('PREMIUM', 'CANCELLATION', 3, 2, '4000', 'C', 0.45),
    ('PREMIUM', 'CANCELLATION', 3, 3, '3000', 'C', NULL),
    ('CLAIM', 'LOSS_PAYMENT', 1, 1, '5000', 'D', 1.0),
    ('CLAIM', 'LOSS_PAYMENT', 1, 2, '5100', 'D', 0.02),
    ('CLAIM', 'LOSS_PAYMENT', 1, 3, '1000', 'C', NULL),
    ('CLAIM', 'LOSS_PAYMENT', 2, 1, '1300', 'D', 0.4),
    ('CLAIM', 'LOSS_PAYMENT', 2, 2, '5000', 'C', 0.35),
    ('CLAIM', 'LOSS_PAYMENT', 2, 3, '4100', 'C', NULL),
    ('CLAIM', 'LOSS_PAYMENT', 3, 1, '2200', 'D', NULL),
    ('CLAIM', 'LOSS_PAYMENT', 3, 2, '5000', 'C', 0.9),
    ('CLAIM', 'LOSS_PAYMENT', 3, 3, '5100', 'C', 0.05),
    ('CLAIM', 'EXPENSE_PAYMENT', 1, 1, '5100', 'D', 1.0),
    ('CLAIM', 'EXPENSE_PAYMENT', 1, 2, '2500', 'C', 0.01),
    ('CLAIM', 'EXPENSE_PAYMENT', 1, 3, '1000', 'C', NULL),
    ('CLAIM', 'EXPENSE_PAYMENT', 2, 1, '1300', 'D', 0.3),
    ('CLAIM', 'EXPENSE_PAYMENT', 2, 2, '5100', 'C', 0.25),
    ('CLAIM', 'EXPENSE_PAYMENT', 2, 3, '4100', 'C', NULL),
    ('CLAIM', 'EXPENSE_PAYMENT', 3, 1, '2200', 'D', NULL),
    ('CLAIM', 'EXPENSE_PAYMENT', 3, 2, '5100', 'C', 0.8),
    ('CLAIM', 'EXPENSE_PAYMENT', 3, 3, '2500', 'C', 0.1),
    ('CLAIM', 'RECOVERY', 1, 1, '1000', 'D', 1.0),
    ('CLAIM', 'RECOVERY', 1, 2, '2500', 'C', 0.02),
    ('CLAIM', 'RECOVERY', 1, 3, '5000', 'C', NULL),
    ('CLAIM', 'RECOVERY', 2, 1, '5000', 'D', 0.4),
    ('CLAIM', 'RECOVERY', 2, 2, '1300', 'C', 0.3),
    ('CLAIM', 'RECOVERY', 2, 3, '4100', 'C', NULL),
    ('CLAIM', 'RECOVERY', 3, 1, '2200', 'D', NULL),
    ('CLAIM', 'RECOVERY', 3, 2, '5000', 'C', 0.6),
    ('CLAIM', 'RECOVERY', 3, 3, '4100', 'C', 0.1);
