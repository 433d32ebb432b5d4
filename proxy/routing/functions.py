"""Name tables for the classifier: side-effect-free builtins, pinning and writing functions."""

from __future__ import annotations

from types import MappingProxyType

# Built-in functions of MySQL 8 and MariaDB 10.x/11.x that neither write data nor leave
# state behind on the backend: a statement calling only these can run on a replica.
# Generous on purpose: an unknown name is treated as a stored function that may write.
_AGGREGATE_AND_WINDOW = """
avg bit_and bit_or bit_xor count group_concat json_arrayagg json_objectagg max min std
stddev stddev_pop stddev_samp sum var_pop var_samp variance median percentile_cont
percentile_disc any_value grouping cume_dist dense_rank first_value lag last_value lead
nth_value ntile percent_rank rank row_number
"""
_CONTROL = "if ifnull nullif coalesce greatest least interval isnull nvl nvl2 decode_oracle"
_STRING = """
ascii bin bit_length char char_length character_length chr concat concat_ws elt export_set
field find_in_set format format_bytes format_pico_time from_base64 hex insert instr lcase
left length lengthb load_file locate lower lpad ltrim make_set match mid oct octet_length
ord position quote regexp_instr regexp_like regexp_replace regexp_substr repeat replace
reverse right rpad rtrim soundex space strcmp substr substring substring_index to_base64
to_char trim ucase unhex upper weight_string sformat natural_sort_key collation charset
coercibility convert cast column_create column_get column_add column_delete column_exists
column_list column_check column_json crc32 crc32c statement_digest statement_digest_text
"""
_NUMERIC = """
abs acos asin atan atan2 ceil ceiling conv cos cot degrees exp floor ln log log10 log2 mod
pi pow power radians rand round sign sin sqrt tan truncate bit_count
"""
_DATE = """
adddate addtime convert_tz curdate current_date current_time current_timestamp curtime date
date_add date_format date_sub datediff day dayname dayofmonth dayofweek dayofyear extract
from_days from_unixtime get_format hour last_day localtime localtimestamp makedate maketime
microsecond minute month monthname now period_add period_diff quarter sec_to_time second
str_to_date subdate subtime sysdate time time_format time_to_sec timediff timestamp
timestampadd timestampdiff to_days to_seconds unix_timestamp utc_date utc_time utc_timestamp
week weekday weekofyear year yearweek add_months months_between
"""
_CRYPTO_AND_INFO = """
aes_decrypt aes_encrypt compress decode des_decrypt des_encrypt encode encrypt md5
old_password password random_bytes sha sha1 sha2 uncompress uncompressed_length
validate_password_strength kdf benchmark current_role current_user database
schema session_user system_user user version icu_version roles_graphml uuid uuid_short
uuid_to_bin bin_to_uuid is_uuid sys_guid ps_thread_id ps_current_thread_id
"""
_MISC = """
default inet_aton inet_ntoa inet6_aton inet6_ntoa is_ipv4 is_ipv4_compat is_ipv4_mapped
is_ipv6 name_const sleep values master_pos_wait master_gtid_wait source_pos_wait
wait_for_executed_gtid_set wait_until_sql_thread_after_gtids gtid_subset gtid_subtract
binlog_gtid_pos wsrep_last_seen_gtid wsrep_last_written_gtid wsrep_sync_wait_upto_gtid
point linestring polygon multipoint multilinestring multipolygon geometrycollection
geomfromtext geomfromwkb astext aswkt asbinary aswkb area glength x y numpoints
"""
# Type names after CAST(... AS / CONVERT(..., : not calls, but followed by '('.
_TYPES = """
nchar binary datetime decimal dec numeric signed unsigned json double float real integer
int bigint smallint tinyint varchar varbinary
"""
# Keywords that may be followed by '(' without being a function call.
_NOT_CALLS = """
select from join where and or xor not in exists any some all on using as with recursive
over values row union intersect except having when then else case between like rlike
regexp is by distinct lateral index key partition window into limit offset escape collate
straight_join force use ignore columns nested path ordinality array of member against mode
boolean expansion query language natural div set table for to at separator rows range
preceding following unbounded current exclude return returns references primary unique
foreign check constraint
"""

BUILTIN_FUNCTIONS: frozenset[str] = frozenset(
    " ".join(
        (_AGGREGATE_AND_WINDOW, _CONTROL, _STRING, _NUMERIC, _DATE, _CRYPTO_AND_INFO, _MISC)
    ).split()
)
TYPE_NAMES: frozenset[str] = frozenset(_TYPES.split())
NOT_CALLS: frozenset[str] = frozenset(_NOT_CALLS.split())
# Families whose every member is a pure function (JSON_SET etc. return a new document).
BUILTIN_PREFIXES: tuple[str, ...] = ("json_", "st_", "mbr", "regexp_")

# Functions whose result or effect lives on the backend that ran them: the session must
# stay on that backend. Name -> reason.
PINNING_FUNCTIONS: MappingProxyType[str, str] = MappingProxyType(
    {
        "last_insert_id": "LAST_INSERT_ID()",
        "get_lock": "user-level lock",
        "release_lock": "user-level lock",
        "release_all_locks": "user-level lock",
        "is_used_lock": "user-level lock",
        "is_free_lock": "user-level lock",
        "lastval": "sequence value of this session",
        # The client now knows this backend connection's id (to KILL it, or to log it).
        "connection_id": "CONNECTION_ID()",
    }
)
# Functions that report on the previous statement: they run on the backend that ran it,
# once, and pin nothing.
PREVIOUS_STATEMENT_FUNCTIONS: frozenset[str] = frozenset({"found_rows", "row_count"})

# Functions that write (sequences): WRITE, but no session state.
WRITING_FUNCTIONS: frozenset[str] = frozenset({"nextval", "setval"})

# @@variables whose value belongs to one backend connection. Name -> reason.
PINNING_SYSTEM_VARIABLES: MappingProxyType[str, str] = MappingProxyType(
    {
        "last_insert_id": "@@last_insert_id",
        "identity": "@@identity",
        "insert_id": "@@insert_id",
    }
)
PREVIOUS_STATEMENT_VARIABLES: frozenset[str] = frozenset({"warning_count", "error_count"})


def is_side_effect_free(name: str) -> bool:
    """True for a builtin (or a type name) that can be evaluated on any backend."""
    return (
        name in BUILTIN_FUNCTIONS
        or name in TYPE_NAMES
        or name in NOT_CALLS
        or name.startswith(BUILTIN_PREFIXES)
    )
