-- 0008_member_email_case.sql: a member's email is unique in its organization whatever
-- its case, beyond ASCII too.
--
-- lower () follows the database's LC_CTYPE; under the C locale of the embedded cluster
-- it folds ASCII only, so 'ÜNÏ@EXÄMPLE.COM' and 'ünï@exämple.com' could be two members.
-- Under ICU's root collation lower () folds every script.
DROP INDEX members_org_email;
CREATE UNIQUE INDEX members_org_email ON members (org_id, lower (email COLLATE "und-x-icu"));
