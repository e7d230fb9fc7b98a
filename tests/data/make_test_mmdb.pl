#!/usr/bin/perl
# make_test_mmdb.pl: writes a small GeoIP2-City style .mmdb for the geo-IP tests
# (ly_geoip_test, ly_event_test). Usage: perl make_test_mmdb.pl OUT.mmdb [next]
# IPv6 tree with IPv4 aliased (::ffff:a.b.c.d and 2002::/16 find the IPv4 entries).
# "next" writes next month's edition: 81.2.69.0/24 moved to France, the rest the same.
use strict;
use warnings;
use MaxMind::DB::Writer::Tree;

die "usage: $0 OUT.mmdb [next]\n" unless @ARGV == 1 || (@ARGV == 2 && $ARGV[1] eq 'next');
my $out = $ARGV[0];
my $next = @ARGV == 2;

my %types = (
    city            => 'map',
    continent       => 'map',
    country         => 'map',
    registered_country => 'map',
    subdivisions    => [ 'array', 'map' ],
    names           => 'map',
    en              => 'utf8_string',
    de              => 'utf8_string',
    code            => 'utf8_string',
    iso_code        => 'utf8_string',
    geoname_id      => 'uint32',
);

my $tree = MaxMind::DB::Writer::Tree->new(
    database_type            => 'GeoIP2-City',
    description              => { en => 'Layers test data' },
    languages                => ['en'],
    ip_version               => 6,
    record_size              => 28,
    alias_ipv6_to_ipv4       => 1,
    remove_reserved_networks => 0,      # 2001:db8::/32 is a documentation range
    map_key_type_callback    => sub { $types{ $_[0] } },
);

sub city {
    my ($country, $country_name, $region, $region_name, $city) = @_;
    my %record = (
        country => { iso_code => $country, names => { en => $country_name } },
        registered_country => { iso_code => $country, names => { en => $country_name } },
    );
    $record{subdivisions} = [ { iso_code => $region, names => { en => $region_name } } ]
        if defined $region;
    $record{city} = { names => { en => $city } } if defined $city;
    return \%record;
}

$tree->insert_network('81.2.69.0/24', $next ? city('FR', 'France', 'IDF', 'Ile-de-France', 'Paris')
                                            : city('GB', 'United Kingdom', 'ENG', 'England', 'London'));
$tree->insert_network('2001:db8::/32', city('DE', 'Germany', 'BE', 'Berlin', 'Berlin'));
$tree->insert_network('175.16.199.0/24', city('CN', 'China', '22', 'Jilin Sheng', 'Changchun'));
# A country without subdivisions.
$tree->insert_network('89.160.20.0/24', city('SE', 'Sweden', undef, undef, undef));
# A network whose record has no country at all (as for some anonymous networks).
$tree->insert_network('192.0.2.0/24', { continent => { code => 'EU' } });
# A country code that is not two capital letters: the reader must not pass it on.
$tree->insert_network('198.51.100.0/24', city('x1', 'Broken', 'BAD REGION CODE TOO LONG', 'Broken', undef));

open my $fh, '>:raw', $out or die "could not open $out: $!\n";
$tree->write_tree($fh);
close $fh or die "could not write $out: $!\n";
