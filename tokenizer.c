/* throwaway stub for engine bring-up; not committed */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"
int tokenizer_load(Tokenizer *t, const char *path, int vocab_size, char err[ERR_MAX]) {
    memset(t,0,sizeof *t); FILE *f=fopen(path,"rb"); if(!f){snprintf(err,ERR_MAX,"cannot open");return -1;}
    t->vocab_size=vocab_size; t->pieces=calloc(vocab_size,sizeof(char*)); t->scores=calloc(vocab_size,4); t->piece_lens=calloc(vocab_size,4);
    if(fread(&t->max_token_length,4,1,f)!=1) return -1;
    for(int i=0;i<vocab_size;i++){int len; if(fread(&t->scores[i],4,1,f)!=1||fread(&len,4,1,f)!=1){snprintf(err,ERR_MAX,"short");return -1;}
      t->pieces[i]=malloc(len+1); if(fread(t->pieces[i],1,len,f)!=(size_t)len)return -1; t->pieces[i][len]=0; t->piece_lens[i]=len;}
    fclose(f); return 0;
}
int tokenizer_load_memory(Tokenizer *t, const void *data, size_t size, int vocab_size, char err[ERR_MAX]) {
    memset(t,0,sizeof *t); const char *p=(const char*)data+4; t->vocab_size=vocab_size; t->pieces=calloc(vocab_size,sizeof(char*)); t->scores=calloc(vocab_size,4); t->piece_lens=calloc(vocab_size,4);
    memcpy(&t->max_token_length,p,4); p+=4;
    for(int i=0;i<vocab_size;i++){int len; memcpy(&t->scores[i],p,4); memcpy(&len,p+4,4); p+=8; t->pieces[i]=malloc(len+1); memcpy(t->pieces[i],p,len); p+=len; t->pieces[i][len]=0; t->piece_lens[i]=len;}
    return 0;
}
void tokenizer_free(Tokenizer *t){ for(int i=0;i<t->vocab_size;i++) free(t->pieces[i]); free(t->pieces); free(t->scores); free(t->piece_lens);}
int tokenizer_lookup(const Tokenizer *t, const char *b, int len){ for(int i=0;i<t->vocab_size;i++) if(t->piece_lens[i]==len && !memcmp(t->pieces[i],b,len)) return i; return -1;}
int tokenizer_encode(const Tokenizer *t, const char *text, int bos, int eos, int *tokens) {
    int n=0; if(bos) tokens[n++]=1; char buf[8];
    if(text[0]){int d=tokenizer_lookup(t," ",1); tokens[n++]=d;}
    for(const char *c=text;*c;c++){ buf[0]=*c; int id=tokenizer_lookup(t,buf,1); tokens[n++]= id>=0?id:(unsigned char)*c+3; }
    char *tmp=malloc(t->max_token_length*2+3);
    while(1){ float best=-1e10; int bi=-1,bid=-1;
      for(int i=0;i<n-1;i++){ if(bos&&i==0)continue; int l1=t->piece_lens[tokens[i]],l2=t->piece_lens[tokens[i+1]]; memcpy(tmp,t->pieces[tokens[i]],l1); memcpy(tmp+l1,t->pieces[tokens[i+1]],l2); int id=tokenizer_lookup(t,tmp,l1+l2); if(id>=0&&t->scores[id]>best){best=t->scores[id];bi=i;bid=id;} }
      if(bi<0)break; tokens[bi]=bid; for(int i=bi+1;i<n-1;i++)tokens[i]=tokens[i+1]; n--; }
    free(tmp); if(eos) tokens[n++]=2; return n;
}
const char *tokenizer_decode(const Tokenizer *t, int prev, int token, int *len){
    if(token<0||token>=t->vocab_size) return NULL; const char *p=t->pieces[token]; *len=t->piece_lens[token];
    if(prev==1 && p[0]==' '){p++;(*len)--;} return p;}
size_t utf8_stream_feed(Utf8Stream *s, const char *in, size_t n, char *out){ memcpy(out,in,n); return n;}
void utf8_stream_reset(Utf8Stream *s){}
