#!/usr/bin/perl
# Causal reads across connections with DBD::MariaDB (its default client-side placeholders,
# or server-side prepared statements with a third argument "server": mariadb_server_prepare):
# connection A writes (INSERT, UPDATE, DELETE, CREATE TABLE, a transaction), connection B
# reads it at once. Prints {"iterations": n, "stale": n}.
use strict;
use warnings;
use DBI;

my ($table, $iterations, $mode) = @ARGV;
my $dsn = "DBI:MariaDB:database=$ENV{PYPROXY_DB};host=$ENV{PYPROXY_HOST};port=$ENV{PYPROXY_PORT}";
my %attr = (RaiseError => 1, PrintError => 0, AutoCommit => 1,
            mariadb_server_prepare => (($mode // '') eq 'server' ? 1 : 0));
my $wr = DBI->connect($dsn, $ENV{PYPROXY_USER}, $ENV{PYPROXY_PASSWORD}, \%attr);
my $rd = DBI->connect($dsn, $ENV{PYPROXY_USER}, $ENV{PYPROXY_PASSWORD}, \%attr);

# B's rows as "v,v;v,v", or undef when the read failed (e.g. no such table yet).
sub rows {
    my ($sql, @args) = @_;
    my $got = eval { $rd->selectall_arrayref($sql, undef, @args) } or return undef;
    return join(';', map { join(',', @$_) } @$got);
}

sub same { my ($got, $want) = @_; return defined $got && $got eq $want; }

$wr->do("CREATE TABLE $table (id INT PRIMARY KEY, v INT NOT NULL)");
my $sel = "SELECT v FROM $table WHERE id = ?";
my $stale = 0;
for my $i (0 .. $iterations - 1) {
    $wr->do("INSERT INTO $table (id, v) VALUES (?, 0)", undef, $i);
    $stale++ unless same(rows($sel, $i), '0');
    $wr->do("UPDATE $table SET v = ? WHERE id = ?", undef, $i + 1, $i);
    $stale++ unless same(rows($sel, $i), $i + 1);
    if ($i % 2) {
        $wr->do("DELETE FROM $table WHERE id = ?", undef, $i);
        $stale++ unless same(rows($sel, $i), '');
    }
    if ($i % 10 == 0) {
        $wr->begin_work;
        $wr->do("INSERT INTO $table (id, v) VALUES (?, 7)", undef, -$i - 1);
        $wr->do("UPDATE $table SET v = 8 WHERE id = ?", undef, -$i - 1);
        $wr->commit;
        $stale++ unless same(rows($sel, -$i - 1), '8');
    }
    if ($i % 50 == 0) {
        $wr->do("CREATE TABLE ${table}_$i (id INT)");
        $stale++ unless same(rows("SELECT COUNT(*) FROM ${table}_$i"), '0');
        $wr->do("DROP TABLE ${table}_$i");
    }
}
$wr->do("DROP TABLE $table");
$wr->disconnect;
$rd->disconnect;
print qq({"iterations": $iterations, "stale": $stale}\n);
