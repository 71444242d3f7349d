package scan

import "time"

// The scan worker protocol (between Isolated in the manager and the scanner binary,
// cmd/portcullis-scanner, which links trivy): one JSON object per line, requests on the worker's
// stdin and responses on its stdout, matched by ID.
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
)

// WorkerRequest is one line on the worker's stdin. Op is "scan", "reload" or "cancel" (of the scan
// with this ID).
type WorkerRequest struct {
	ID     uint64 `json:"id"`
	Op     string `json:"op"`
	Image  string `json:"image,omitempty"`
	Access Access `json:"access"`
}

// WorkerResponse is one line on the worker's stdout: the result or the error of request ID.
type WorkerResponse struct {
	ID          uint64    `json:"id"`
	Result      *Result   `json:"result,omitempty"`
	Err         string    `json:"err,omitempty"`
	DBUpdatedAt time.Time `json:"dbUpdatedAt"`
}

// DBRequest asks a scanner process for one vulnerability DB operation on Dir: "ensure" (download
// and install one when there is none or it is due; EnsureDB) or "update" (download a due one into
// Dir+".new" for a worker's reload; UpdateDB). Repositories are OCI repositories of trivy's DB
// artifact, tried in order; Insecure allows plain http to them.
type DBRequest struct {
	Op           string   `json:"op"`
	Dir          string   `json:"dir"`
	Repositories []string `json:"repositories"`
	Insecure     bool     `json:"insecure,omitempty"`
}

// DBResponse is a DBRequest's outcome. Updated: a new DB was downloaded ("update": into Dir+".new";
// "ensure": installed). Stale ("ensure"): the download failed but Dir holds an older DB, which stays
// in use. Err is the failure, if any.
type DBResponse struct {
	Updated bool   `json:"updated,omitempty"`
	Stale   bool   `json:"stale,omitempty"`
	Err     string `json:"err,omitempty"`
}
