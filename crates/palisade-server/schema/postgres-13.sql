-- Palisade schema, migration 13 (from version 12), PostgreSQL dialect: the
-- computers a trusted-directory rule names as its trusted servers, by id,
-- resolved when the rule is created. A name only says which computer the
-- admin meant at that moment: whoever enrolls later under that name (a
-- misspelling, a computer not enrolled yet, a name freed and taken again)
-- must not approve for the computers the rule covers. Existing rules are
-- pinned to the computers of those names that had enrolled by the rule's
-- creation. Keep in step with sqlite-13.sql.
CREATE TABLE rule_computers (
    rule_id BIGINT NOT NULL REFERENCES rules (id),
    computer_id BIGINT NOT NULL REFERENCES computers (id),
    PRIMARY KEY (rule_id, computer_id)
);
INSERT INTO rule_computers (rule_id, computer_id)
SELECT DISTINCT r.id, c.id
FROM rules r
CROSS JOIN LATERAL json_array_elements_text(
    COALESCE(CAST(r.body_json AS json) -> 'computers', CAST('[]' AS json))) AS j (name)
JOIN computers c ON c.org_id = r.org_id AND c.name = j.name
WHERE r.kind = 'trusted_directory' AND c.enrolled_ms <= r.created_ms;
