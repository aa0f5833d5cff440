// Command kindcheck decodes a kind cluster config STRICTLY with kind's own v1alpha4 types and
// checks every ClusterConfiguration kubeadmConfigPatch strictly against kubeadm's own types
// (v1beta3 map-form extraArgs, v1beta4 list-form extraArgs). Unknown or misspelt fields are
// errors. It prints "ok: ..." and exits 0, or prints the error and exits 1.
//
// The top-level decode follows kind's loader (sigs.k8s.io/kind
// pkg/internal/apis/config/encoding/load.go: go.yaml.in/yaml/v3 with KnownFields(true) into
// v1alpha4.Cluster), which is internal to kind and so cannot be imported.
//
// Usage: kindcheck CONFIG.yaml
package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strconv"

	yaml3 "go.yaml.in/yaml/v3"
	"k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/v1beta3"
	"k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/v1beta4"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kind/pkg/apis/config/defaults"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	sigsyaml "sigs.k8s.io/yaml"
)

type typeMeta struct {
	Kind       string `yaml:"kind,omitempty"`
	APIVersion string `yaml:"apiVersion,omitempty"`
}

func decodeCluster(raw []byte) (*v1alpha4.Cluster, error) {
	var tm typeMeta
	if err := yaml3.Unmarshal(raw, &tm); err != nil {
		return nil, fmt.Errorf("could not determine kind / apiVersion: %w", err)
	}
	if tm.APIVersion != "kind.x-k8s.io/v1alpha4" || tm.Kind != "Cluster" {
		return nil, fmt.Errorf("want apiVersion kind.x-k8s.io/v1alpha4, kind Cluster; got %q, %q", tm.APIVersion, tm.Kind)
	}
	cfg := &v1alpha4.Cluster{}
	d := yaml3.NewDecoder(bytes.NewReader(raw))
	d.KnownFields(true)
	if err := d.Decode(cfg); err != nil {
		return nil, fmt.Errorf("unable to decode config: %w", err)
	}
	return cfg, nil
}

var imageVersion = regexp.MustCompile(`:v?(\d+)\.(\d+)`)

// kubeadmAPIFor is the kubeadm config version kind generates for a node image
// (pkg/cluster/internal/kubeadm/config.go: v1beta3 for 1.23-1.35, v1beta4 from 1.36).
// A patch whose apiVersion differs is silently ignored by kind (pkg/internal/patch/resource.go).
func kubeadmAPIFor(image string) string {
	m := imageVersion.FindStringSubmatch(image)
	if m == nil {
		return ""
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major == 1 && minor < 36 {
		return "kubeadm.k8s.io/v1beta3"
	}
	return "kubeadm.k8s.io/v1beta4"
}

// checkPatch strictly decodes one kubeadm merge patch. Only ClusterConfiguration patches are
// checked field by field; other kinds only have to be valid YAML with a kind.
func checkPatch(where, patch, image string) (string, error) {
	var meta map[string]interface{}
	if err := sigsyaml.Unmarshal([]byte(patch), &meta); err != nil {
		return "", fmt.Errorf("%s: not YAML: %w", where, err)
	}
	kind, _ := meta["kind"].(string)
	if kind == "" {
		return "", fmt.Errorf("%s: a kubeadm patch needs a kind", where)
	}
	if kind != "ClusterConfiguration" {
		return kind + " (not checked)", nil
	}
	apiVersion, _ := meta["apiVersion"].(string)
	if apiVersion != "" {
		img, explicit := image, image != ""
		if !explicit {
			img = defaults.Image
		}
		if want := kubeadmAPIFor(img); want != "" && want != apiVersion {
			msg := fmt.Sprintf("%s: apiVersion %s, but kind generates %s for %s, so kind would silently ignore this patch",
				where, apiVersion, want, img)
			if explicit {
				return "", fmt.Errorf("%s", msg)
			}
			fmt.Fprintf(os.Stderr, "kindcheck: warning: %s (default image of kind; fine if you pass a matching --image)\n", msg)
		}
	}
	if apiVersion == "" {
		// kind >= v0.32 converts an unversioned map-form patch into v1beta4 (kubeadm_merge.go):
		// check it against the form its extraArgs use.
		apiVersion = "kubeadm.k8s.io/v1beta4"
		if as, ok := meta["apiServer"].(map[string]interface{}); ok {
			if _, isMap := as["extraArgs"].(map[string]interface{}); isMap {
				apiVersion = "kubeadm.k8s.io/v1beta3"
			}
		}
	}
	var target interface{}
	switch apiVersion {
	case "kubeadm.k8s.io/v1beta3":
		target = &v1beta3.ClusterConfiguration{}
	case "kubeadm.k8s.io/v1beta4":
		target = &v1beta4.ClusterConfiguration{}
	default:
		return "", fmt.Errorf("%s: unknown kubeadm apiVersion %q (want kubeadm.k8s.io/v1beta3 or v1beta4)", where, apiVersion)
	}
	// Like apimachinery's strict serializer (what kubeadm uses): YAML -> JSON, then a
	// case-sensitive decode that rejects unknown and duplicate fields.
	js, err := sigsyaml.YAMLToJSONStrict([]byte(patch))
	if err != nil {
		return "", fmt.Errorf("%s: %w", where, err)
	}
	strictErrs, err := sigsjson.UnmarshalStrict(js, target)
	if err == nil && len(strictErrs) > 0 {
		err = strictErrs[0]
		for _, e := range strictErrs[1:] {
			err = fmt.Errorf("%w; %v", err, e)
		}
	}
	if err != nil {
		return "", fmt.Errorf("%s: %s ClusterConfiguration: %w", where, apiVersion, err)
	}
	return "ClusterConfiguration " + apiVersion, nil
}

func run(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	cfg, err := decodeCluster(raw)
	if err != nil {
		return "", err
	}
	checked := []string{}
	for i, p := range cfg.KubeadmConfigPatches {
		image := ""
		if len(cfg.Nodes) > 0 {
			image = cfg.Nodes[0].Image
		}
		s, err := checkPatch(fmt.Sprintf("kubeadmConfigPatches[%d]", i), p, image)
		if err != nil {
			return "", err
		}
		checked = append(checked, s)
	}
	for n, node := range cfg.Nodes {
		for i, p := range node.KubeadmConfigPatches {
			s, err := checkPatch(fmt.Sprintf("nodes[%d].kubeadmConfigPatches[%d]", n, i), p, node.Image)
			if err != nil {
				return "", err
			}
			checked = append(checked, s)
		}
	}
	return fmt.Sprintf("ok: %s: %d node(s), patches %v", path, len(cfg.Nodes), checked), nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kindcheck CONFIG.yaml")
		os.Exit(2)
	}
	msg, err := run(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "kindcheck: "+err.Error())
		os.Exit(1)
	}
	fmt.Println(msg)
}
