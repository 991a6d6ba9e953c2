"""Words an error text may keep when :mod:`syncd.ledger.errortext` reduces a vendor message.

Generated from the string literals of syncd and its connectors (their fixed messages, field names and
docs), less the sandbox seed data (which holds invented patient names and notes) and a few words that are
also given names. Extend by hand when a vendor's fixed message loses a word it should keep: a word missing
here is only shown as ``[redacted]`` (safe, never wrong); never add a name or a clinical term.
"""

# fmt: off
WORDS = frozenset(
    """
aaa abcdefghij abcdefghijklmnopqrstuvwxyz abcdefghjkmnpqrstvwxyz aborts about above absent absolute
abstract accept accepted accepting accepts access accident account accounts acknowledged across act
action actions active acts actually add added adding address addresses adds admin adopt adopted
adopts advance advances advisory aep after afterwards again against age agent ago agree agreed
agrees ahead aiohttp aiosqlite alembic aligned alive all allocation allow allowed allowlist allows
alone along already also alternative alternatives always am ambiguity ambiguous america among
an ancestor ancestors and anew annotated another answer answered answering answers any anything
anyway anywhere apex api apikey app appear appears append appended application applied applies apply
applying appointment appointments approval appt apscheduler apt aq ar are argument array arrays
arrive arrived arrives arriving as asc ascending ascii asia ask asked asking asks assess asset
assigned assignedresource assignments async asyncio asyncpg at attached attempt attempting attempts
attend attr attributes audit audits auth authenticate authentication authorise authorization auto
autoescaped automatic automatically availability available avoid await awaits aware away axis back
background backlog backlogs backoff backs bad bar base based bases basic batch batched batcher
batches be bearer beats became because become becomes been before begin behaviour behind being
belong belonging belongs below benchmarks beside besides best between big bind blank blindly blocked
blueprint bodies body bogota booked booking bookkeeping bool boolean both bottom bound boundary
bounded boyle branch breaks brings brought browser bucket budget budgets build builds built bulk
bumped bumping bursts business busy but by byte bytes cache cached calendar calendars call callable
callback callbacks called caller callers callout callouts calls came can cancel canceled
cancellation cancelled cancelling cancels candidate candidates cannot canonical canonically cap
capabilities capacity capture cardinality carried carries carry carrying case cased catches
categories category cause causes centre certificate chain change changed changes changing channel
channels char character characters chars chart charts chatter cheap cheapest check checked checklist
checks checksum choice choices choose chosen chronologically chunks claim claims clash class classes
classification classified classify clause cleanup clear cleared clears cli click client clinic clock
close closed closes closest closing cloud cmdline coalesce coalesced code codes collect collected
collectors column columns com combination come comes comma command commands comment comments commit
commits committed common companion comparable comparator compare compared compares comparing
comparison compatible competing complete completed completion components composite composition
computed concurrency concurrent concurrently condition conditional conditions conf config
configuration configure configured confirm confirmations confirmed confirms conflict conflicting
conflicts connect connected connecting connection connections connector connectors consecutive
console const constant constants constraint consultation consumer contact contacts contain content
context contract contradict contradicting contradiction contradictions contradicts control
conversions cookie cookies copied copy coql core coroutine correct corrected correction corrects
costs could count counted counter counters counting counts covers cpu crash crashed crashing create
created creates creating creation credential credentials credits criteria criterion crm crosswalk
crowded csrf css csv ctrl ctx current cursor cursors custom customer customers cut daemon daily data
database databases datagram dataset date dates datetime datetimes day days db dd ddthh deactivation
dead deadletters debug decide decided decides decimals decision decisions declarative declared
declares decode dedup deduplicated deeply default defaults deferred defined defines definition
degraded delay delete deleted deletes deletion deletions deliveries delivery delta demo denied
dentally deny depend dependent derived derives desc descending descends describe describes
description descriptors deserialize desired detached detail details detect detection detects
deterministic developer development device devices diagnose diagnoses diagnosis dialect dict dicts
did died dies differ differed differences different differently differs difflib digest digested
digit digits direction directly directory disable disabled discard discarded dispatched dns do doc
docs docstring doctor doctors document documented documents does doesn doing domain don done dots
dotted doubling doubt down dr drain drained draining drains draws driven drives drop dropped
dropping drops dry dst due dump duplicate duplicated duplicates durable durably duration durations
during dxx each earlier earliest echo echoed echoes edit edited ehr eight either elements else
elsewhere email emails emit emptied empty en enabled enclosed encode end ended ending endpoint ends
engine enough entered entity entries entry envelope environment epoch equal equals error errors es
escaped europe even event events ever every everything exact exactly example exceeded exceeds excel
except exception exceptions exclude excludes exclusive executed exhausted exist existed existence
existent existing exists exit exits expected expire expired expires expiring expiry explain explains
exponential export exported exports exposing exposition express expressed expressible external extra
facility factor factory facts fail failed failing fails failure failures fake fakes fallback falls
false far faster fault faults feed feeds fetch fetched few fewer fewest fhir field fields figures
file files filesystem filler fills filter filtered final finally find finding findings finds
fingerprint fingerprints finish finished finishing finite fired first fit fits five fix fixed fixing
flag flight flow flush flushed fmt fold follow following follows for forbidden forbids force forged
forgets forgotten form format formats formatted formed forms found four fraction fragment frame
frames free freed freely frees fresh freshly from front frozen fulfilled full fully func function
functions further furthest future gap gate gauge gauges gave general generate generation generic get
gets give given gives global gmt go goes gone good got grant granted greater green group grouped
groups grows guard guess guessed guest guests had half halves hand handed handful handing handled
handler handlers hands handshake hang happen happened happens hard harmless has hash hashed have
head header headers heal health healthcare healthy healthz hears heartbeat held help helper helpers
here hex hh hi high hint histograms history hit hmac hms hn hold holder holding holds honours hook
hooks host hot hour hourly hours how however html http https human humans iam iana id idempotency
idempotent identified identifier identifies idle ids if ignore ignored ignores ignoring img
immediate immutable implement implements import imported importing imports imposed impossible in
inbox inc include included including increasing incremental index indexed inf info ini init initial
initialised injection inline input insensitive insert inserts inside inspect instance instances
instant instants instead insufficient intake integer integration integrations intelligent internal
internally interpolate interpolation interrupted interval intervals into invalid invariants invented
involved ip is isn iso issued issues it item items iteration its itself javascript jinja jitter job
jobs join joined joins journalctl js json judge judged judges just keep keeps kept key keyed keys
keyset keyword keywords kill killed kind kinds kit knew know knowledge known knows kolkata label
lack lacks lag lagging lags laid lambda landed lang language large larger largest last latency later
latest latter layer layout lazily lazy leading leads leak leaks learned lease leases least leave
leaves leaving ledger left leftovers len length lengths less let lets letter lettered letters level
library libsystemd licence lie lies life lifecycle lifetime like limit limited limiter limiting
limits line lines link linked links linux list listed listening listens listing lists literal live
liveness lives lo load loaded loader loading loads loc local localhost locals location locations
locator lock locked locks log logged logger loggers logging logical login logout logs london long
longer look looked looking looks lookup lookups loop lose loses loss lossless lossy lost low lower
lowest ls machine made madrid mail main maintain make makes malformed management mandatory many map
mapfuncs mapped mapping mappings maps mark marked marker marks mask masked match matched matches
matching max maximum may md mean meaning means meanwhile measured meets member members memory merge
merged merges message messages meta metadata meth method metric metrics midnight might migrate
migrated migrating migrations milliseconds min minimum mins minute minutes misconfigured misdirected
mismatch missed missing mm mod mode model models modified modify module modules moment monotonic
moot more most mount mounted move moved moves moving ms must mutable mutate my naive name named
names namespace naming narrow narrowed native naturally near nearly need needed needs neither nested
nests network neutral never new newer newest newline newlines newly news next no non nonce none nor
normal normalised noshow nosniff not note notes nothing notice notices notification notifications
notifies notify nov now nowhere ns ntp null number numbers oauth oauthtoken obj object objects
obtain obtained of off offered offers offset offsets often ok old older oldest olsk on onboard
onboarding once one ones onlive onlivesite only op opaque open openapi opened opening opens openssl
operation operations operator operators option optional optionally options or order ordered org
organisation organization orig origin originated orphans other others otherwise our ours out outbox
outcome outcomes outlived output outside over overdue overlay override overrides overview own owned
owner owners owning owns pace package page paged pages pagination paging paid pair paired pairs
panel param parameter parameters params parentheses parentrecordid parse parsed parser parsing part
partial participant participants parts party pass passed passes passing password past pasted patch
path paths patient patients patricia pattern pauses payload payment pending per periodic permanent
permission permissions permitted person phase phi phone phrase picklist pid ping pings pipe pipes
place placeholder plain plainly plan planned planning plans please plumbing plus pod point pointed
points policies policy poll polled polling polls port ports positive post postgresql posts power
practice practitioner practitioners pragma pre precede preceded precision predecessor predicate
predicts preferences prefix prescription presence present presentation previous print printable
printed printing prints priority problem problems proc process processed processing processor
processors produced profile progress prometheus proof properties property proposed proposes prose
protocol provided provides providing proxies public pulls pure purpose push pushed pushes put puts
python queried queries query question queue queued queues quick quiet quota quotas quotes race raise
raised raises ran rand random range rate rather raw re reach reachable reached reaches read readable
readiness reading readme reads ready readyz real reason reasons rebuild rebuilds rebuilt rec receive
received receiver recent recently recommends recomputed reconcile reconciled reconciles
reconciliation reconciliations record recorded records recovery recreated recycle recycled red
redact redacted redaction redirects ref reference references referrer refers refills refined refresh
refreshed refreshes refusal refuse refused refuses refuted registered registers registry rejected
rejection related relative released releases releasing relevant remaining remedy remember remembers
reminders remove removed removing render rendered renderer renew renewal renewed reopening repeat
repeatable repeated repeats replace replaced replaces replay replica replicas replication report
reported reports repr reprs request requested requests required requires requiring reread rerun
reschedules reserve reset resets resolution resolve resolved resolves resource resources response
responses rest restart restarted restored restricted result results resync retire retired retriable
retried retries retry retrying return returned returning returns reuse reused reveal revealed
revealing reverse revises revision revoke revoked revokes rfc right rights role rolled rolls root
rotated round rounded route routed routes row rows rule rules run runner running runs runtime safe
said salesforce saludya same sandbox sandboxes save saved saw say says sb scalars scaled scan
scanned scanning scans schedstarttime scheduled scheduler schema schemas scheme scope scopes scrape
script scrub scrubbed sd search searched searches sec second seconds secret secrets secs section
secure security see seed seeded seeding seeds seems seen sees select self send sender sending sends
sensitive sent separated serialise serialises series serve served server serves service
serviceappointment serviceappointmentid services serving session sessions set sets settable setting
settings settle settled settles settling several sforce sha shape shapes share shared shares sharing
shipped shippers short shortened shorter should show shown shows shutdown shutting sid side sides
sig sigint sigkill sign signal signalled signature signed signer signing signs sigterm since single
site sites size skip skipped slash slot slots slow slows small smaller smallest snapshot snapshots
so sobject sobjects socket sockets soft some somebody something soon soql sort sorted sorting source
sources space spaces specialties specialty specific specified spend spends spent split sq sql
sqlalchemy sqlite sqlstate src ss ssz stable stack staff stage stages stale stamp stamped stamping
stamps stand standard standing stands start started starting starts state stateful statement
statements states static stats status statuses stay stayed stays stderr stdin stdout step still stop
stopped stopping stops store stored stores storing str strategy stream stretch stretched strict
strictly string strings strip structlog structure structured stuck style stylesheet sub subclasses
subcommands submitted subscribe subscribed subscribes subscription subscriptions substituted
succeeded success successes successful successfully such suffix suggested suggestion summary sun
superseded supplies supply support supported supports suppression sure surgery surrogatepass
survives suspects svg sweep switch switches sync syncd synced synchronise synchronous syntax sys
system systemctl systemd systems sz table tables tags tail take taken takes taking talks target
targets task tasks team tel tell tells template templates tenacity terminal territories test tests
text texts than that the their theirs them themselves then there therefore these they thin things
third this those thread three throttle throttled throttler throttling through tier ties time timed
timeout timeouts timer times timestamp timezone timing title tls to today together token tokens toml
too took total touch touches touching traceback trail trailing transaction transactions transient
transit transition transitions translate translated translates translations travels tree tried tries
trigger trip trips true truncate truncated trusted trustworthy try trying ttl turn turned turns
twice two tx type typed types typical ulid unable unauthorized unavailable unbalanced unbind
unchanged unclaimed unconfirmed undecodable undefined under undo unexpected unexpired unexpressible
unfiltered unfinished unhandled unique uniqueness unit unix unknown unless unmappable unmodified
unprocessed unreachable unreadable unready unrecognized unrelated unresolved unsafe unset unstamped
unsubscribed unsupported unterminated until untouched unusable unused unwritten up updatable update
updated updates upgrade upgraded upgrades upgrading upkeep upsert upserts urgent uri url urlencoded
us usable usage use used user users uses utc utcnow utf uuid valid validate validated validates
validation value values variable vendor vendors verbose verdict verification verified verifies
verify version versions very viable video view views violates visit vocabulary wait waited waiters
waiting waitlist waits wake wal wall wants warned warning warnings was watch watchdog way ways we
webhook webhooks well went were what whatever when whenever where wherever whether which whichever
while whitespace who whole whose why wide widen will win window windows wins wire with withheld
within without woken words work workflow working works worst worth worthwhile would wrapped wrappers
writable write writer writers writes writing written wrong wrote www xx yet ymwd you your yyyy za
zoho zone
""".split()
)
"""Lower-case words (compared case-insensitively)."""

IDENTIFIERS = frozenset(
    """
APIs APScheduler ActionResult AlreadyRunning AmbiguousReference ApiKeyAuth AppointmentNumber
AppointmentRow AssignedResource AuditEntry AuthFailure CRMs CancellationReason CannotComplete
ChangePage CheckStatus ClientSession ConcurrentPerOrgLongTxn ConfigError ConflictRow ConnectorConfig
ConnectorDiagnosis ConnectorState ConnectorStateRow ConnectorSummary ConsoleActions CrosswalkEntry
CrosswalkRow CursorRow DateTime DeadLetter DentallyAuth DentallyClient DentallyConnector
DentallyMapper DentallySandbox DoctorReport DryOverlay EHRs EngagementChannelType
EngagementChannelTypeId FieldConflict GETting HeldBack HttpClient HttpOnly IDs IPs ImportReport
InProgress InboxBatcher InboxFormatError InboxItem InvalidAppointment LastModifiedDate LedgerConfig
LedgerStateStore LedgerUnavailable LoadCredential LogConfig LoginThrottle MappingError MemberState
MergeResult MiB NestJS NotFound NotWritable OAuth OnliveAuth OnliveClient OnliveConnector
OnliveMapper OnliveSandbox OpenAPI OutboxItem PATCHes POSTed ParentRecordId PassResult PostgreSQL
PriorityLimiter RateLimit RateLimited RefError RemoveReport ReplicationDateError ResolveResult
RunningSandbox RunningServer SObject SQLAlchemy SQLModel SQLite SalesforceAuth SalesforceClient
SalesforceHealthConnector SalesforceHealthSandbox SaludYa SaludYaClient SaludYaConnector
SaludYaMapper SaludYaSandbox SameSite SandboxBase ScanState SchedEndTime SchedStartTime ServerConfig
ServerState ServiceAppointment ServiceAppointmentId ServiceResource ServiceResourceId
ServiceTerritory ServiceTerritoryId SessionSigner SharedRefresh StateStore StatusCategory
StatusWrite SvogAAC SyncGroup SyncdCommand SyncdError SyncdGroup SyncdLogger SystemModstamp
TargetPlan ThrottlerException TooLarge TotalRequests URIs URLs UTCDateTime UnknownOutcome
UnresolvedSecret UpdatedSinceRefused ValueError VendorError VendorMapping VendorPackage VendorRecord
WatchdogSec WebhookDelivery WebhookError WebhookEvent WindowCounter WorkType WorkTypeId WriteKind
WriteOutcome WriteRequest ZohoAuth ZohoCRM ZohoClient ZohoCrmConnector ZohoCrmSandbox ZohoMapper
additionalProperties apiKey appointmentId appointmentTypes bP bPT beyJ calendarIds
cancellationReason channelId consoleSession createdAt dT dateTime deletedAt deletedDate
deletedRecords eF earliestDateAvailable endAt endDate errorCode externalId extraFields fA fT
firstName gPLEAY includeDeleted interactionId isReferenceRequired isSuccess lastName
latestDateCovered nextRecordsUrl organizationId originUrl requestBody sObject securitySchemes
serviceCategories serviceId serviceTypes sourceSystem sssZ startAt startDate statusCode subStatus
timeZone totalPages totalSize updatedAt updatedSince userGroupId workTypeId
""".split()
)
"""Mixed-case identifiers (vendor field names such as ``PersonEmail``), compared exactly."""
# fmt: on
