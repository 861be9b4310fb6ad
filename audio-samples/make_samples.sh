#!/usr/bin/env bash
# Makes the bundled sample calls offline (espeak-ng, flite, sox), with pink noise at ~15 dB
# SNR; English ones through a telephone channel (300-3400 Hz, 8 kHz mu-law). Writes labels.csv.
# Scam and legitimate calls in English and Mandarin, including hard legitimate ones: a real
# bank's fraud check, a pharmacy reminder, a delivery notice, police community outreach.
# Needs: apt-get install espeak-ng flite sox; pip install pypinyin (Mandarin is spoken from
# pinyin with tone digits: espeak-ng's cmn voice reads Han characters' tone marks aloud).
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# file | label | lang | type | engine:voice | text
calls=(
  "en_scam_irs_warrant|scam|en|government_impersonation|flite:kal|This is officer Daniel Brooks with the Internal Revenue Service. There is a warrant for your arrest for unpaid taxes. To avoid arrest today, you must pay with Google Play gift cards. Do not tell anyone about this call."
  "en_scam_safe_account|scam|en|bank_impersonation|flite:slt|Hello, this is the fraud department of your bank. Your account has been compromised. You need to move your savings to a safe account right now. Please read me the verification code we just sent you."
  "en_scam_tech_support|scam|en|tech_support|flite:rms|This is Microsoft technical support. Your computer is infected with a virus. Please install AnyDesk so our technician can get remote access and fix it. Stay on the line."
  "en_scam_grandson|scam|en|relative_in_trouble|espeak:en-gb+m2|Grandma, it is me, your grandson. I was in a car accident and I am in jail. I need bail money right away. Please buy gift cards, and don't tell mom."
  "en_legit_bank_fraud_check|legit|en|bank_fraud_check|flite:awb|Hello, this is the fraud prevention team at your bank, calling about a recent card transaction. We will never ask for your PIN or password. If you do not recognise it, please hang up and call the number on the back of your card."
  "en_legit_pharmacy|legit|en|pharmacy_reminder|espeak:en-us+f3|Hi, this is the pharmacy calling to remind you that your prescription is ready for pickup. No payment is needed over the phone. Have a nice day."
  "en_legit_delivery|legit|en|delivery_notice|flite:slt|Hello, this is a notice from the parcel service. We tried to deliver your package today. You can choose a new delivery day on our website, or collect it at the post office."
  "en_legit_police_outreach|legit|en|police_outreach|espeak:en-us+m1|Good afternoon, this is officer Lee from the community police station. We are hosting a neighborhood safety meeting on Thursday evening at the library. Everyone is welcome."
  "zh_scam_police_safe_account|scam|zh|公检法诈骗|espeak:cmn|你好，我是市公安局的警官。你的银行账户涉嫌洗钱，已经被冻结。你必须马上把钱转到安全账户，不要告诉任何人。"
  "zh_scam_bank_code|scam|zh|客服诈骗|espeak:cmn+f2|您好，我是银行客服中心。您的账户出现异常交易，请把手机收到的验证码告诉我，并且下载屏幕共享软件。"
  "zh_legit_takeout|legit|zh|外卖服务|espeak:cmn+m2|您好，您的外卖已经送到楼下了，请下来取一下，谢谢。"
  "zh_legit_checkup|legit|zh|预约服务|espeak:cmn+f3|您好，这里是社区医院，提醒您明天上午九点有体检预约，请按时到达。"
)

source ./speech_tools.sh

echo "path,label,lang,type,voice,script" > labels.csv
for call in "${calls[@]}"; do
  IFS='|' read -r name label lang type voice text <<<"$call"
  sample_call "$voice" "$lang" "$text" "$name.wav"
  printf '%s.wav,%s,%s,%s,%s,"%s"\n' "$name" "$label" "$lang" "$type" "$voice" "$text" >> labels.csv
done
du -sh .
