package scan

import "time"

// The scan worker protocol (between Isolated in the manager and the scanner binary,
// cmd/portcullis-scanner, which links trivy): one JSON object per line, requests on the worker's
// stdin and responses on its stdout (a child process), or both on one Unix socket connection (a
// scanner container), matched by ID.
const (
	// WorkerEnv holds the WorkerConfig (JSON) of a long-lived scan worker; the scanner binary serves
	// scans when it is set.
	WorkerEnv = "PORTCULLIS_SCAN_WORKER"
	// DBEnv holds one DBRequest (JSON); the scanner binary performs it, prints one DBResponse on
	// stdout and exits.
	DBEnv = "PORTCULLIS_SCAN_DB"
	// WorkerErrPrefix starts the line a worker prints on stderr when it cannot serve (a DB that does
	// not open).
	WorkerErrPrefix = "scan worker: "
	// ListenEnv holds the path of a Unix socket on which the scanner binary serves the protocol to
	// every connection (as its --listen flag does): the scanner container of config/manager, which
	// has no ServiceAccount token, reached by WorkerConfig.Address.
	ListenEnv = "PORTCULLIS_SCAN_LISTEN"
)

// WorkerRequest is one line on the worker's stdin (or connection). Op is "scan", "reload",
// "cancel" (of the scan with this ID), "open" (the first request on a connection to a listening
// scanner: open the DB of Config, or check that the one open is the same) or "db" (perform DB, a
// DBRequest, in the scanner).
type WorkerRequest struct {
	ID     uint64        `json:"id"`
	Op     string        `json:"op"`
	Image  string        `json:"image,omitempty"`
	Access Access        `json:"access"`
	Config *WorkerConfig `json:"config,omitempty"`
	DB     *DBRequest    `json:"db,omitempty"`
}

// WorkerResponse is one line on the worker's stdout (or connection): the result or the error of
// request ID. DB answers an "db" request.
type WorkerResponse struct {
	ID          uint64      `json:"id"`
	Result      *Result     `json:"result,omitempty"`
	DB          *DBResponse `json:"db,omitempty"`
	Err         string      `json:"err,omitempty"`
	DBUpdatedAt time.Time   `json:"dbUpdatedAt"`
}

// DBRequest asks a scanner process for one vulnerability DB operation on Dir: "ensure" (download
// and install one when there is none or it is due; EnsureDB) or "update" (download a due one into
// Dir+".new" for a worker's reload; UpdateDB). Repositories are OCI repositories of trivy's DB
// artifact, tried in order; Insecure allows plain http to them; Egress, when set, is checked at
// every dial of the download.
type DBRequest struct {
	Op           string       `json:"op"`
	Dir          string       `json:"dir"`
	Repositories []string     `json:"repositories"`
	Insecure     bool         `json:"insecure,omitempty"`
	Egress       *EgressRules `json:"egress,omitempty"`
}

// EgressRules carry the manager's egress policy (package egress: Allow and Deny entries as
// egress.ParseRule reads them, besides its default denials) to the scanner, which dials the DB
// repositories, their token realms and redirects through it. nil: no policy (tests).
type EgressRules struct {
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
}

// DBResponse is a DBRequest's outcome. Updated: a new DB was downloaded ("update": into Dir+".new";
// "ensure": installed). Stale ("ensure"): the download failed but Dir holds an older DB, which stays
// in use. Err is the failure, if any.
type DBResponse struct {
	Updated bool   `json:"updated,omitempty"`
	Stale   bool   `json:"stale,omitempty"`
	Err     string `json:"err,omitempty"`
}
