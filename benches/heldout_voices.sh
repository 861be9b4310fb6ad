#!/usr/bin/env bash
# End-to-end check on calls the detector was never tuned on: new wording, spoken by voices
# the bundled samples do not use (festival HTS, espeak-ng accents and variants not in
# audio-samples/; Mandarin from a man's recorded syllables, gcin-voice), all through the 8 kHz
# mu-law telephone channel with noise. Makes them in a scratch folder, then scores them with `vishguard score`
# (F1, false-positive rate, time to first alert). sox dithers at random, so each rendering of the
# same calls sounds a little different and the recogniser's errors move with it: RENDERINGS=N
# (default 3) makes and scores N of them and reports each and their mean.
# Usage: [RENDERINGS=N] benches/heldout_voices.sh [MODEL]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${HELDOUT_DIR:-$root/target/heldout_voices}
model=${1:-base}
mkdir -p "$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
source "$root/audio-samples/speech_tools.sh"

# file | label | lang | type | engine:voice | text
calls=(
  "en_scam_ssa_suspended|scam|en|government_impersonation|festival:cmu_us_slt_arctic_hts|This is an urgent call from the Social Security Administration. Your social security number has been suspended because of suspicious activity. To avoid legal action, press one now to speak with an officer."
  "en_scam_bitcoin_atm|scam|en|bank_impersonation|espeak:en-gb-scotland+f2|I am calling from your bank's security department. Hackers have access to your account. Withdraw your cash today and deposit it at a bitcoin ATM so we can keep it safe. Do not discuss this with the bank staff."
  "en_scam_refund_remote|scam|en|refund_scam|espeak:en-029+m4|Hello, this is the refund department. You were charged three hundred ninety nine dollars for a renewal. To cancel and get your refund, go to your computer and download the support app so I can connect to it."
  "en_scam_customs_parcel|scam|en|delivery_scam|espeak:en-us-nyc+m3|This is customs and border protection. A package in your name was seized with illegal items inside. You will be arrested unless you pay the clearance fine today with prepaid cards. Keep this call confidential."
  "en_legit_bank_callback|legit|en|bank_fraud_check|festival:cmu_us_slt_arctic_hts|This is an automated message from your credit union about a purchase at a gas station. If you made this purchase, no action is needed. If not, call the number on the back of your card. We never ask for your password."
  "en_legit_court_jury|legit|en|court_notice|espeak:en-gb-scotland+m4|This is the county court with a reminder that your jury service begins on Monday morning. Please bring your summons and photo identification. Parking is available behind the courthouse."
  "en_legit_doctor|legit|en|appointment_reminder|espeak:en-029+f4|Hello, this is the dental office calling to confirm your cleaning appointment on Friday at ten. Please call us if you need to reschedule. Thank you."
  "en_legit_internet|legit|en|customer_service|espeak:en-us-nyc+f2|Hi, this is your internet provider. We finished the repair on the line in your street this morning, so your service should be back to normal. Restart your router if anything is slow."
  "zh_scam_prosecutor|scam|zh|公检法诈骗|gcin:3|我是检察院的工作人员。你名下的银行卡涉嫌一起诈骗案，现在要对你的资金进行核查，请把钱转到国家监管账户，这件事必须保密。"
  "zh_scam_refund_code|scam|zh|退款诈骗|gcin:3|您好，我是淘宝客服，您购买的商品有质量问题，我们要给您办理双倍退款，请打开支付宝，把收到的验证码告诉我。"
  "zh_legit_bank_notice|legit|zh|银行通知|gcin:3|您好，这里是建设银行，您的信用卡账单已经出来了，本月还款日是二十号，可以通过手机银行还款。"
  "zh_legit_parcel|legit|zh|快递通知|gcin:3|您好，我是快递员，您的快递放在小区门口的快递柜里了，取件码已经发到您手机上。"
)

renderings=${RENDERINGS:-3}
cd "$root"
for r in $(seq 1 "$renderings"); do
  dir=$out/rendering$r
  rm -rf "$dir"; mkdir -p "$dir"
  echo "path,label,lang,type,voice" > "$dir/labels.csv"
  for call in "${calls[@]}"; do
    IFS='|' read -r name label lang type voice text <<<"$call"
    sample_call "$voice" "$lang" "$text" "$dir/$name.wav"
    printf '%s.wav,%s,%s,%s,%s\n' "$name" "$label" "$lang" "$type" "$voice" >> "$dir/labels.csv"
  done
  cargo run --release -q -- score "$dir/labels.csv" --out "$dir/score" --model "$model"
done
python3 - "$out" "$renderings" <<'PY'
import json, statistics, sys
out, n = sys.argv[1], int(sys.argv[2])
rows = []
for r in range(1, n + 1):
    m = json.load(open(f"{out}/rendering{r}/score/metrics.json"))
    lang = {k: f"{v['flagged']} flagged, recall {v['recall']:.2f}, FPR {v['fpr']:.2f}" for k, v in m["by_language"].items()}
    rows.append((m["f1"], m["fpr"], m["roc_auc"], m["time_to_first_alert"]["median_s"]))
    print(f"rendering {r}: F1 {m['f1']:.3f} FPR {m['fpr']:.3f} ROC-AUC {m['roc_auc']:.3f} median first alert {m['time_to_first_alert']['median_s']} s; {lang}")
mean = lambda i: statistics.mean(x[i] for x in rows if x[i] is not None)
print(f"mean of {n}: F1 {mean(0):.3f} FPR {mean(1):.3f} ROC-AUC {mean(2):.3f} median first alert {mean(3):.1f} s")
PY
